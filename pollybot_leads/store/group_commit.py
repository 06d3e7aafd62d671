"""Group commits: writes that arrive while one is being written go together next.

A transaction on the store costs far more than the work inside it (docs/stores.md), so
writes of one key (a lead, or all creates) that
queue behind a transaction in flight are committed together in the next one. Each
writer still gets its own outcome, and a writer whose deadline passes before its write
was taken is dropped, never written.

A batch is capped, on a line fitted to the recent batches (seconds = fixed + per unit x
weight), to what its items add in half of the budget the fixed part leaves the writing
request, so that a store slow per item makes batches smaller instead of failing (and
leaving unknown) all of a large one. A transaction's cost is mostly fixed (its statements and
its synced commit): charging all of it to each item would say only one item fits a slow
store, and batches of one would never show otherwise (docs/load.md). Until the recent
batches tell the two parts apart, a batch may be at most twice the largest of them. A
writer that the batch in flight and the writes queued with it (in as many batches as the
cap makes of them) would not leave the time to be written is refused at once, unwritten,
rather than at its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .client import remaining, unavailable

# A batch is sized to take at most this share of its writer's remaining budget, at the
# cost the recent batches were written at.
BUDGET_SHARE = 0.5
RECENT_BATCHES = 32  # the batches the cost line is fitted to

Item = TypeVar("Item")
Result = TypeVar("Result")


class KeyedLocks:
    """One asyncio lock per key while anyone holds or waits for it.

    Writers of one key in this process take turns instead of conflicting in the store;
    the wait is bounded by the request's store deadline.
    """

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def busy(self, key: str) -> bool:
        """Whether someone holds or waits for ``key``."""
        return key in self._locks

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            left = remaining()
            async with asyncio.timeout(left if left is not None else None):
                await lock.acquire()
            try:
                yield
            finally:
                lock.release()
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


def _retrieved(outcome: asyncio.Future[Any]) -> None:
    """Mark an outcome's exception as seen (asyncio logs one that never is)."""
    if not outcome.cancelled():
        outcome.exception()


@dataclass
class _Pending(Generic[Item, Result]):
    item: Item
    outcome: asyncio.Future[Result]


class GroupCommit(Generic[Item, Result]):
    """Submit items per key; ``write`` commits a batch of one key's items, in order,
    and returns each item's result or the exception that item alone raises."""

    def __init__(
        self,
        locks: KeyedLocks,
        write: Callable[[str, list[Item]], Awaitable[list[Result | Exception]]],
        *,
        max_batch: int | None = None,
        weight: Callable[[Item], int] = lambda _item: 1,
    ) -> None:
        self._locks, self._write, self._max, self._weight = locks, write, max_batch, weight
        self._queues: dict[str, list[_Pending[Item, Result]]] = {}
        self._recent: deque[tuple[int, float]] = deque(maxlen=RECENT_BATCHES)  # weight, s

    def cost(self) -> tuple[float, float | None] | None:
        """The recent batches' cost line: (fixed seconds, seconds per unit of weight), the
        second None while they all had one weight; None before any batch."""
        if not self._recent:
            return None
        n = len(self._recent)
        mean_w = sum(w for w, _ in self._recent) / n
        mean_t = sum(t for _, t in self._recent) / n
        spread = sum((w - mean_w) ** 2 for w, _ in self._recent)
        if spread == 0:
            return mean_t, None
        slope = sum((w - mean_w) * (t - mean_t) for w, t in self._recent) / spread
        slope = max(slope, 0.0)
        return max(mean_t - slope * mean_w, 0.0), slope

    def one_item_seconds(self) -> float | None:
        """What a batch of one unit costs on the recent cost line (None: no batch yet)."""
        cost = self.cost()
        return None if cost is None else cost[0] + (cost[1] or 0.0)

    def _expected_wait(self, key: str, queue: list[_Pending[Item, Result]]) -> float | None:
        """When a writer just queued for ``key`` would have its outcome, on the recent
        cost line: the batch in flight (an average one), then the batches everything
        queued takes (as many as :meth:`limit` divides it into: each costs the fixed part
        again). None while nothing is in flight or no batch was written yet."""
        cost = self.cost()
        if cost is None or not self._locks.busy(key):
            return None
        fixed, per_unit = cost
        in_flight = sum(t for _, t in self._recent) / len(self._recent)
        queued = sum(self._weight(waiting.item) for waiting in queue)
        return in_flight + self._batches(queued, per_unit) * fixed + (per_unit or 0.0) * queued

    def _batches(self, weight: int, per_unit: float | None) -> int:
        """How many batches ``weight`` queued takes: under :meth:`limit` each; while the
        slope is unknown that limit doubles with each batch (up to ``max_batch``)."""
        limit = self.limit()
        if not limit:
            return 1
        if per_unit is not None:
            return max(1, math.ceil(weight / limit))
        batches, left = 1, weight - limit
        while left > 0:
            limit = 2 * limit if self._max is None else min(self._max, 2 * limit)
            batches, left = batches + 1, left - limit
        return batches

    async def submit(self, key: str, item: Item) -> Result:
        entry: _Pending[Item, Result] = _Pending(item, asyncio.get_running_loop().create_future())
        queue = self._queues.setdefault(key, [])
        queue.append(entry)
        left, wait = remaining(), self._expected_wait(key, queue)
        if left is not None and wait is not None and wait > left:
            # The writes ahead would not leave it the time: refused now, unwritten, rather
            # than at its deadline (an overload is answered fast, and nothing is wasted).
            queue.remove(entry)
            if not queue:
                del self._queues[key]
            raise TimeoutError("the writes ahead would not leave the time to write this one")
        try:
            async with self._locks.hold(key):
                if not entry.outcome.done():  # nobody took it yet: write the waiting ones
                    left, one = remaining(), self.one_item_seconds()
                    if left is not None and one is not None and left < one:
                        # Too late to write even this one in time: refused, never written
                        # (a write begun now would most likely end with its outcome unknown).
                        raise TimeoutError("too little of the budget left to write in")
                    await self._run(key, self._take(key, entry))
        except BaseException:
            queue = self._queues.get(key, [])
            if not entry.outcome.done() and entry in queue:
                queue.remove(entry)  # never written: drop it
                if not queue:
                    del self._queues[key]
            else:  # in a batch being written: its outcome is nobody's to read now
                entry.outcome.add_done_callback(_retrieved)
            raise
        return entry.outcome.result()  # raises the batch's failure, or this item's own

    def limit(self) -> int | None:
        """The most weight the next batch may carry: ``max_batch``; on the recent cost
        line, what adds at most :data:`BUDGET_SHARE` of the budget its fixed part leaves;
        and, until that line has a known slope, twice the largest recent batch."""
        cost = self.cost()
        if cost is None:
            return self._max
        fixed, per_unit = cost
        fits: int | None = None
        if per_unit is None:
            fits = 2 * max(w for w, _ in self._recent)
        elif per_unit > 0:
            left = remaining()
            if left is not None:
                fits = max(1, int((left - fixed) * BUDGET_SHARE / per_unit))
        if fits is None:
            return self._max
        return fits if self._max is None else min(self._max, fits)

    def _take(self, key: str, entry: _Pending[Item, Result]) -> list[_Pending[Item, Result]]:
        """The next batch of ``key``: the oldest waiting items, up to :meth:`limit` in
        weight (at least one), ``entry`` among them."""
        queue = self._queues.pop(key)
        batch: list[_Pending[Item, Result]] = []
        limit = self.limit()
        total = 0
        for waiting in queue:
            total += self._weight(waiting.item)
            if batch and limit is not None and total > limit:
                break
            batch.append(waiting)
        if entry not in batch:
            batch = [*batch[:-1], entry]
        rest = [e for e in queue if e not in batch]
        if rest:
            self._queues[key] = rest
        return batch

    def _paced(self, seconds: float, weight: int, left: float | None) -> None:
        """Add a batch (failed or not) to the recent ones. Its time is counted at most
        :data:`BUDGET_SHARE` of the budget its writer had left, so a stall never makes
        the cost refuse a writer with most of its budget ahead: batches keep running,
        and a store that is fast again brings the cost down."""
        if left is not None:
            seconds = min(seconds, max(left, 0.0) * BUDGET_SHARE)
        self._recent.append((weight, seconds))

    async def _run(self, key: str, batch: list[_Pending[Item, Result]]) -> None:
        weight = sum(self._weight(entry.item) for entry in batch)
        started, left = time.monotonic(), remaining()
        try:
            results = await self._write(key, [entry.item for entry in batch])
        except BaseException as exc:
            self._paced(time.monotonic() - started, weight, left)
            # Each waiter raises it from its own outcome (a cancelled writer leaves the
            # outcome unknown to the others: for them it is a 503).
            shared = exc if isinstance(exc, Exception) else unavailable()
            for entry in batch:
                if not entry.outcome.done():
                    entry.outcome.set_exception(shared)
            if isinstance(exc, Exception):
                return
            raise
        self._paced(time.monotonic() - started, weight, left)
        for entry, result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                entry.outcome.set_exception(result)
            else:
                entry.outcome.set_result(result)
