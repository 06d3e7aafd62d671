"""The webhook dispatcher's read of pending events: a window over their time, not the backlog.

An event not yet fanned out carries ``pending: <its createdAt>`` (leads/event_log.py), held
by the sparse index ``pending``. The dispatcher reads them one window of that time at a
time, ``{pending: {$gte: low, $lt: high}}``: an index range, so a read examines the
pending events inside the window and no others. Why not ``{pending: true}`` with a
limit: on a store that reads every key of a query's index range before it applies the
limit (the store quirk ``limit_reads_whole_range``), each read of a backlog would cost
the whole backlog. On MongoDB the window is the same plain range query (where the limit
also stops the scan early).

- ``low``: no pending event is older than it. Nothing can be written below it later
  either: an event's time is taken in the transaction that commits it, and a
  transaction lives at most 60 s on every store, so ``low`` never passes
  ``now - COMMIT_LAG`` (10 minutes: room for clocks of several processes to disagree).
- ``width`` (a store/windows.py ``Window``) adapts to the backlog's density: halved when
  a read comes back full (the window may hold more), doubled when it comes back under
  half full. A window
  reaching past now has no upper bound, so in the steady state a read examines the
  events of the last ``COMMIT_LAG`` not yet fanned out: the new ones.
- ``low`` is kept in ``webhook_dispatch`` (only ever moved forward, ``$max``) so that a
  restarted dispatcher begins where the last one stopped; a first one begins at the
  retention horizon and doubles its way over the empty windows (one cheap read each).
- Events written by earlier versions (``pending: true``) are read by their own query
  until none are left: an index point that holds only them.

Several dispatchers (processes) may read at once, each with its own window: fanning out
twice creates nothing twice (webhooks/deliveries.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..leads.event_log import EVENT_RETENTION_SECONDS
from ..store.windows import Window

COMMIT_LAG = timedelta(minutes=10)
FIRST_WIDTH = timedelta(seconds=1)
MIN_WIDTH = timedelta(milliseconds=1)
MAX_WIDTH = timedelta(days=32)
# Empty windows read at most in one call (1 s doubled 22 times passes 31 days).
MAX_PROBES = 32
# The kept low moves at most once a minute (one small write).
KEEP_EVERY = timedelta(minutes=1)
STATE_ID = "pending"


def new_window() -> Window:
    """A window of pending times (here) or of due times (webhooks/due.py): doubled
    after a read under half full, halved after a full one."""
    return Window(FIRST_WIDTH, MIN_WIDTH, MAX_WIDTH, growth_max=2.0)


@dataclass
class PendingBatch:
    """Pending events read from one window; ``passed`` it once they are fanned out."""

    events: list[dict[str, Any]]
    high: datetime | None = None  # the window's end (None: open)
    full: bool = False  # as many as the limit: the window may hold more
    limit: int = 0  # the most events the read could return
    legacy: bool = False  # read by the ``pending: true`` query
    filters: list[dict[str, Any]] = field(default_factory=list)  # every read it took


class PendingWindow:
    def __init__(
        self, db: Any, *, limit: int = 500, retention_seconds: int = EVENT_RETENTION_SECONDS
    ) -> None:
        self._events = db["events"]
        self._state = db["webhook_dispatch"]
        self.limit = limit
        self._retention = timedelta(seconds=retention_seconds)  # of events (a first low)
        self._low: datetime | None = None
        self._kept: datetime | None = None
        self._window = new_window()
        self._legacy_left = True
        # After the last read, more may be waiting now: it came back full, or its window
        # ended before the present (legacy events: the windows are still to be read).
        self.behind = False

    async def read(self, now: datetime, *, limit: int | None = None) -> PendingBatch:
        """The next pending events (empty when none): from the oldest window holding any;
        at most ``limit`` (default :attr:`limit`)."""
        limit = limit or self.limit
        filters: list[dict[str, Any]] = []
        if self._legacy_left:
            legacy = {"pending": True}
            filters.append(legacy)
            events = await self._find(legacy, limit)
            if events:
                self.behind = True
                full = len(events) >= limit
                return PendingBatch(events, full=full, limit=limit, legacy=True, filters=filters)
            self._legacy_left = False
        if self._low is None:
            await self._load(now)
        for _ in range(MAX_PROBES):
            assert self._low is not None
            high: datetime | None = self._low + self._window.width
            assert high is not None
            if high > now:
                high = None
            window: dict[str, Any] = {"$gte": self._low}
            if high is not None:
                window["$lt"] = high
            filters.append({"pending": window})
            events = await self._find(filters[-1], limit)
            batch = PendingBatch(events, high, len(events) >= limit, limit, filters=filters)
            if events or high is None:
                self.behind = batch.full or high is not None
                return batch
            await self.passed(batch, now)  # an empty window: on to the next, twice as wide
        self.behind = True  # not yet at the present
        return PendingBatch([], limit=limit, filters=filters)

    async def passed(self, batch: PendingBatch, now: datetime) -> None:
        """``batch``'s events are fanned out: move the window on."""
        if batch.legacy:
            return
        assert self._low is not None
        if batch.full:  # the same window again, half as wide (an open one: up to now)
            span = (batch.high or now) - self._low
            self._window.narrow(span)
            return
        horizon = now - COMMIT_LAG
        self._low = max(self._low, horizon if batch.high is None else min(batch.high, horizon))
        if len(batch.events) < batch.limit // 2:
            self._window.widen()
        if self._kept is None or self._low - self._kept >= KEEP_EVERY:
            await self._state.update_one(
                {"_id": STATE_ID}, {"$max": {"low": self._low}}, upsert=True
            )
            self._kept = self._low

    async def _find(self, filter_: dict[str, Any], limit: int) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self._events.find(filter_, limit=limit).to_list(None)
        return found

    async def _load(self, now: datetime) -> None:
        kept = await self._state.find_one({"_id": STATE_ID})
        horizon = now - COMMIT_LAG
        if kept is None:
            self._low = now - self._retention - timedelta(days=1)
        else:
            self._kept = kept["low"]
            self._low = min(kept["low"], horizon)
        self._window = new_window()
