"""Group commits: writes that arrive while one is being written go together next.

A transaction on the store costs far more than the work inside it (docs/stores.md), so
writes of one key (a lead, or all creates) that
queue behind a transaction in flight are committed together in the next one. Each
writer still gets its own outcome, and a writer whose deadline passes before its write
was taken is dropped, never written. A batch is also capped to what the store has lately
written in half the writing request's remaining budget, so that a slow store makes
batches smaller instead of failing (and leaving unknown) all of a large one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .client import remaining, unavailable

# A batch is sized to take at most this share of its writer's remaining budget, at the
# pace (seconds per unit of weight) its key's recent batches were written at.
BUDGET_SHARE = 0.5
PACE_SMOOTHING = 0.3  # weight of the latest batch in that pace

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
        # Seconds per unit of weight the recent batches took (None: none written yet).
        self.pace: float | None = None

    async def submit(self, key: str, item: Item) -> Result:
        entry: _Pending[Item, Result] = _Pending(item, asyncio.get_running_loop().create_future())
        self._queues.setdefault(key, []).append(entry)
        try:
            async with self._locks.hold(key):
                if not entry.outcome.done():  # nobody took it yet: write the waiting ones
                    left = remaining()
                    if left is not None and self.pace is not None and left < self.pace:
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
        """The most weight the next batch may carry: ``max_batch``, and what fits in
        :data:`BUDGET_SHARE` of the current deadline at the recent pace."""
        left = remaining()
        if left is None or not self.pace:
            return self._max
        fits = max(1, int(left * BUDGET_SHARE / self.pace))
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
        """Fold a batch's time (failed or not) into the pace. One unit's share is counted
        at most :data:`BUDGET_SHARE` of the budget its writer had left, so the pace never
        refuses a writer with most of its budget ahead: batches keep running, and a store
        that is fast again brings the pace down."""
        latest = seconds / max(1, weight)
        if left is not None:
            latest = min(latest, max(left, 0.0) * BUDGET_SHARE)
        if self.pace is None:
            self.pace = latest
        else:
            self.pace += PACE_SMOOTHING * (latest - self.pace)

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
