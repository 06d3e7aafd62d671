"""Where claims find due deliveries: per endpoint, a window of due times, not the queue.

One read of every endpoint's due deliveries, most overdue first, had two costs. On a
store that reads a query's whole index range before it applies the limit
(the store quirk ``limit_reads_whole_range``) it examined the whole due queue, and the
queue grows whenever deliveries fall behind the writes (with three endpoints a create
makes three; docs/stores.md has what it cost). And a slow endpoint's backlog, being the
most overdue, came first in every read, so the other endpoints waited behind it.

So each endpoint has its own window over its pending deliveries' ``dueAt``, read on the
index ``(webhookId, state, dueAt)``: ``{webhookId, state: "pending", dueAt: {$gte: low,
$lt: high}}`` with ``high`` at most now. A read examines the deliveries in the window
and no others; an endpoint without room for more in flight is not read at all.

- ``low``: none of the endpoint's pending deliveries is due before it. Every write of a
  delivery sets ``dueAt`` to its writer's clock or later, and ``low`` never passes
  ``now - COMMIT_LAG``; it moves past a delivery only once this process leased it.
- ``width`` (a store/windows.py ``Window``, as in webhooks/pending.py): halved when a
  read comes back full,
  doubled when under half full; empty windows before the present are galloped over.
- An endpoint with nothing due is read again after ``IDLE_SECONDS``, or sooner when
  this process queues a delivery for it or sets one due (a retry).
- In memory, per process: a process's first read of an endpoint looks for its oldest
  due delivery (where a limit does not stop a scan, that one read examines all of the
  endpoint's due ones).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from ..store.windows import Window
from .pending import COMMIT_LAG, MAX_PROBES, new_window

PENDING = "pending"
WINDOW_TARGET = 64  # deliveries one window should hold at most
IDLE_SECONDS = 1.0
MILLISECOND = timedelta(milliseconds=1)


class DueWindows:
    def __init__(self, deliveries: Any) -> None:
        self._deliveries = deliveries
        self._low: dict[str, datetime] = {}
        self._windows: dict[str, Window] = {}
        self._idle_until: dict[str, datetime] = {}

    def fresh(self, webhook_ids: set[str]) -> None:
        """Deliveries were queued for these endpoints: read them at the next claim."""
        for webhook_id in webhook_ids:
            self._idle_until.pop(webhook_id, None)

    def due_at(self, webhook_id: str, when: datetime) -> None:
        """This process set one of the endpoint's deliveries due at ``when`` (a retry)."""
        until = self._idle_until.get(webhook_id)
        if until is not None and until > when:
            self._idle_until[webhook_id] = when

    def idle(self, webhook_id: str, now: datetime) -> bool:
        until = self._idle_until.get(webhook_id)
        return until is not None and until > now

    async def read(self, webhook_id: str, now: datetime) -> tuple[list[dict[str, Any]], datetime]:
        """The endpoint's due deliveries in its window, most overdue first (at most
        WINDOW_TARGET), and the window's end; hand both to ``passed`` after leasing."""
        horizon = now + MILLISECOND  # due: dueAt <= now
        low = self._low.get(webhook_id)
        if low is None:  # this process's first look: from the oldest due one, if any
            oldest = await self._deliveries.find_one(
                {"webhookId": webhook_id, "state": PENDING, "dueAt": {"$lt": horizon}},
                sort=[("dueAt", 1)],
            )
            low = min(now - COMMIT_LAG, oldest["dueAt"] if oldest else now)
        kept = self._windows.get(webhook_id)
        window = new_window() if kept is None else replace(kept)
        for _ in range(MAX_PROBES):
            high = min(low + window.width, horizon)
            found = self._deliveries.find(
                {"webhookId": webhook_id, "state": PENDING, "dueAt": {"$gte": low, "$lt": high}},
                limit=WINDOW_TARGET,
            )
            docs = await found.to_list(None)
            if docs or high >= horizon:
                break
            low = min(high, now - COMMIT_LAG) if high > now - COMMIT_LAG else high
            window.widen()  # an empty window: on, twice as wide
        self._low[webhook_id], self._windows[webhook_id] = low, window
        if not docs:
            self._idle_until[webhook_id] = now + timedelta(seconds=IDLE_SECONDS)
        docs.sort(key=lambda d: d["dueAt"])
        return docs, high

    def passed(
        self,
        webhook_id: str,
        docs: list[dict[str, Any]],
        high: datetime,
        leased: set[str],
        now: datetime,
    ) -> None:
        """Move the endpoint's window past what was leased of ``docs`` (read up to
        ``high``); what was not leased stays in it."""
        low, window = self._low[webhook_id], self._windows[webhook_id]
        horizon = now - COMMIT_LAG
        left = [d for d in docs if d["_id"] not in leased]
        if len(docs) >= WINDOW_TARGET:
            window.narrow(high - low)
        elif len(docs) < WINDOW_TARGET // 2:
            window.widen()
        if left:
            low = max(low, min(left[0]["dueAt"], horizon))
        elif len(docs) < WINDOW_TARGET:
            low = max(low, min(high, horizon))
        self._low[webhook_id] = low
