"""Group commits: writes that arrive while one is being written go together next.

A transaction on the store costs far more than the work inside it (about half the rate
of a single insert on SecantusDB), so writes of one key (a lead, or all creates) that
queue behind a transaction in flight are committed together in the next one. Each
writer still gets its own outcome, and a writer whose deadline passes before its write
was taken is dropped, never written. A batch is also capped to what the store would
write in half the writing request's remaining budget, so that a slow store makes
batches smaller instead of failing (and leaving unknown) all of a large one. A batch's
time is learned as a fixed part (a transaction's round trips and commit) plus a part
per item: charging it all per item had kept batches at one item on a busy store, whose
transactions are slow whatever they hold (docs/load.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..errors import Overloaded
from .client import remaining, unavailable

# A batch is sized to take at most this share of its writer's remaining budget, by the
# cost its recent batches were written at.
BUDGET_SHARE = 0.5
COST_MEMORY = 0.7  # how much a batch counts in the cost, against the next one
MIN_SPREAD = 0.25  # variance of the recent weights below which no line is fitted

Item = TypeVar("Item")
Result = TypeVar("Result")


class KeyedLocks:
    """One asyncio lock per key while anyone holds or waits for it.

    Writers of one key in this process take turns instead of conflicting in the store;
    the wait is bounded by the request's store deadline.
    """

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str, until: asyncio.Future[Any] | None = None) -> AsyncIterator[bool]:
        """The key's lock (True), or False as soon as ``until`` is done first."""
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        acquire = asyncio.ensure_future(lock.acquire())
        try:
            left = remaining()
            waits: set[asyncio.Future[Any]] = {acquire} if until is None else {acquire, until}
            try:
                async with asyncio.timeout(left if left is not None else None):
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            except BaseException:
                if acquire.done() and not acquire.cancelled():
                    lock.release()  # handed the lock just as the wait ended: give it back
                else:
                    acquire.cancel()
                raise
            held = acquire.done() and not acquire.cancelled()
            if not held:
                acquire.cancel()  # a lock waiter cancelled wakes the next one
            try:
                yield held
            finally:
                if held:
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


class BatchCost:
    """A batch's seconds as ``fixed + per_item * weight``, fitted to the recent batches
    (least squares, each older batch counting :data:`COST_MEMORY` times less). Until
    their weights differ enough to fit a line, all of it counts as fixed; the batches
    then grow by doubling (GroupCommit.limit), and the line soon shows what an item
    adds."""

    def __init__(self) -> None:
        self._n = self._w = self._ww = self._t = self._wt = 0.0  # decayed sums
        self.largest = 0  # the heaviest batch written

    def learn(self, seconds: float, weight: int) -> None:
        n, w, ww, t, wt = (COST_MEMORY * x for x in (self._n, self._w, self._ww, self._t, self._wt))
        self._n, self._w, self._ww = n + 1, w + weight, ww + weight * weight
        self._t, self._wt = t + seconds, wt + weight * seconds

    def line(self) -> tuple[float, float]:
        """(fixed seconds, seconds per unit of weight)."""
        spread = self._n * self._ww - self._w * self._w  # n^2 times the weights' variance
        if spread > MIN_SPREAD * self._n * self._n:
            per_item = (self._n * self._wt - self._w * self._t) / spread
            fixed = (self._t - per_item * self._w) / self._n
            if per_item >= 0 and fixed >= 0:
                return fixed, per_item
            if fixed < 0:
                return 0.0, self._t / self._w
        return self._t / self._n, 0.0

    def of(self, weight: int) -> float:
        fixed, per_item = self.line()
        return fixed + per_item * weight

    def least_for_one(self) -> float:
        """The least a batch of one item can be expected to take: no more than the line
        says, nor than the recent batches' time per item (the line's fixed part is only
        an estimate, and refusing a writer on it must not be)."""
        return min(self.of(1), self._t / max(self._w, 1e-9))


@dataclass
class _Pending(Generic[Item, Result]):
    item: Item
    outcome: asyncio.Future[Result]
    deadline: float  # time.monotonic() past which its writer has its 503


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
        self.cost: BatchCost | None = None  # None: no batch written yet

    async def submit(self, key: str, item: Item) -> Result:
        left = remaining()
        deadline = time.monotonic() + (left if left is not None else 1e9)
        outcome: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        entry = _Pending(item, outcome, deadline)
        self._queues.setdefault(key, []).append(entry)
        try:
            async with self._locks.hold(key, until=outcome) as held:
                if held and not outcome.done():  # nobody took it yet: write the waiting ones
                    left = remaining()
                    if (
                        left is not None
                        and self.cost is not None
                        and left < self.cost.least_for_one()
                    ):
                        # Too late to write even this one in time: refused, never written
                        # (a write begun now would most likely end with its outcome unknown).
                        raise Overloaded()
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

    def limit(self, left: float | None) -> int | None:
        """The most weight the next batch may carry: ``max_batch``; what the estimate
        says the items past the first add in :data:`BUDGET_SHARE` of the time the
        deadline leaves after a batch of one; and twice the heaviest batch written so
        far (a cost measured on small batches is not stretched far). ``left``: seconds
        until the first deadline of the batch's writers (None: no deadline)."""
        if left is None or self.cost is None:
            return self._max
        fixed, per_item = self.cost.line()
        spare = BUDGET_SHARE * (left - fixed - per_item)
        fits = 1 + (max(0, int(spare / per_item)) if per_item > 0 else self._max or 1_000_000)
        fits = min(fits, 2 * max(1, self.cost.largest))
        return fits if self._max is None else min(self._max, fits)

    def _take(self, key: str, entry: _Pending[Item, Result]) -> list[_Pending[Item, Result]]:
        """The next batch of ``key``: the oldest waiting items, up to :meth:`limit` in
        weight (at least one), ``entry`` among them."""
        now = time.monotonic()
        queue = []
        for waiting in self._queues.pop(key):
            if waiting is not entry and self.cost is not None:
                if (
                    waiting.deadline - now < self.cost.least_for_one()
                ):  # could not be written in time
                    waiting.outcome.set_exception(Overloaded())
                    continue
            queue.append(waiting)
        batch: list[_Pending[Item, Result]] = []
        first = min(entry.deadline, queue[0].deadline)  # the oldest come first
        limit = self.limit(None if first >= now + 1e8 else first - now)
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
        """Fold a batch's time (failed or not) into the cost. A batch is counted at most
        :data:`BUDGET_SHARE` of the budget its writer had left, whatever it held, so the
        cost never refuses a writer with most of its budget ahead (a stalled store had
        otherwise left every later writer refused, and no batch to learn from): batches
        keep running, and a store that is fast again brings the cost down."""
        if left is not None:
            seconds = min(seconds, max(left, 0.0) * BUDGET_SHARE)
        if self.cost is None:
            self.cost = BatchCost()
        self.cost.learn(seconds, max(1, weight))

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
        if self.cost is not None:
            self.cost.largest = max(self.cost.largest, weight)
        for entry, result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                entry.outcome.set_exception(result)
            else:
                entry.outcome.set_result(result)
