"""The event log: one event per committed lead change, in the change's own transaction.

``append`` runs inside the transaction of the lead write it describes, so a change and
its event commit together or not at all: no crash of the server or the store can leave
a change without its event or an event without its change. Each chatbot's events are
numbered 1, 2, 3… by ``sequence``; the number comes from the chatbot's document in
``event_sequences``, incremented in the same transaction, so sequences are dense and
committed in order (a second writer of the chatbot conflicts on that document until
the first commits). New events carry ``pending: <createdAt>`` until the webhook
dispatcher has taken them (webhooks/pending.py reads them by that time, a window at a
time); the feed reads them either way.

Stored event: ``{_id: "evt_<16 hex>", chatbotId, workspaceId, sequence, type,
createdAt, data, pending?}``; ``data`` is ``{"lead": <public lead, datetimes as
datetimes>, "changes"?: {field: {"from", "to"}}}``; a ``lead.deleted`` event's lead is
``{"id": …}`` only (no personal data).

Deletion is permanent everywhere: the transaction that deletes a lead also ``redact``s
its earlier events, each keeping its id, type, sequence and times, with ``data`` reduced
to ``{"lead": {"id": …}, "redacted": true}``. They are found by ``by_lead`` (the chatbot
and ``data.lead.id``, which every event has had from the first release: no migration),
so a deletion reads the lead's own events and no other. A webhook delivery reads its
event when it is sent (webhooks/delivery.py), so one not yet sent carries the redacted
form.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import Any

from aiohttp import web

from .. import ids
from ..store.client import store_errors
from ..store.driver import ASCENDING, IndexModel, UpdateMany
from ..store.lookups import increment
from ..store.quirks import PLAIN, StoreQuirks

# Events are kept at least this long (the store's TTL monitor removes them after it).
EVENT_RETENTION_SECONDS = 30 * 24 * 3600
EVENT_INDEXES = {
    # The feed reads a chatbot's events by sequence; the store itself expires them.
    "events": [
        IndexModel(
            [("chatbotId", ASCENDING), ("sequence", ASCENDING)], name="by_sequence", unique=True
        ),
        IndexModel(
            [("createdAt", ASCENDING)], name="expiry", expireAfterSeconds=EVENT_RETENTION_SECONDS
        ),
        # The webhook dispatcher's work: sparse, so it holds only events not yet fanned
        # out, by their time (read a window at a time: webhooks/pending.py).
        IndexModel([("pending", ASCENDING)], name="pending", sparse=True),
        # A deletion's: the lead's own events (lead_events).
        IndexModel([("chatbotId", ASCENDING), ("data.lead.id", ASCENDING)], name="by_lead"),
    ],
}

EVENT = "evt_"
LEAD_CREATED = "lead.created"
LEAD_UPDATED = "lead.updated"
LEAD_DELETED = "lead.deleted"
LEAD_MERGED = "lead.merged"  # on the target, with data.mergedIds (each has a lead.deleted)
# Fields whose change a lead.updated event reports (the rest follow from these).
CHANGE_FIELDS = ("name", "email", "phone", "externalId", "source", "status", "metadata")


def lead_events(chatbot_id: str, lead_id: str) -> dict[str, Any]:
    """The filter of one lead's events: an equality read of ``by_lead``."""
    return {"chatbotId": chatbot_id, "data.lead.id": lead_id}


def redacted(lead_id: str) -> dict[str, Any]:
    """The ``data`` of a deleted lead's earlier events: its id, nothing personal."""
    return {"lead": {"id": lead_id}, "redacted": True}


def lead_changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{field: {"from", "to"}}`` for every reported field that differs."""
    return {
        field: {"from": before.get(field), "to": after.get(field)}
        for field in CHANGE_FIELDS
        if before.get(field) != after.get(field)
    }


class EventSignal:
    """Events were committed in this process: wakes its webhook dispatcher at once.

    The lead repository notifies it after each commit; a dispatcher in the same process
    (``serve``) waits on it instead of sleeping out its poll, so a delivery does not
    wait up to ``poll_seconds`` for its event. Writes of other processes are still found
    by the poll.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()

    def clear(self) -> None:
        """Before a read of pending events: a commit after this wakes the next wait."""
        self._event.clear()

    async def wait(self, timeout: float) -> None:
        """Until notified (since the last clear) or ``timeout`` seconds passed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)


class EventLog:
    def __init__(self, db: Any, quirks: StoreQuirks = PLAIN) -> None:
        self._events = db["events"]
        self._sequences = db["event_sequences"]
        self._quirks = quirks

    async def append(
        self,
        session: Any,
        chatbot_id: str,
        workspace_id: str,
        events: list[tuple[str, dict[str, Any]]],
        now: datetime,
    ) -> list[dict[str, Any]]:
        """Store ``events`` (type, data) of one chatbot, numbered in order, in ``session``'s
        transaction; returns the stored documents."""
        if not events:
            return []
        last = await increment(
            self._sequences, chatbot_id, "last", len(events), self._quirks, session
        )
        first = last - len(events) + 1
        docs = [
            {
                "_id": ids.new_id(EVENT),
                "chatbotId": chatbot_id,
                "workspaceId": workspace_id,
                "sequence": first + offset,
                "type": kind,
                "createdAt": now,
                "data": data,
                "pending": now,  # until fanned out (see webhooks/pending.py)
            }
            for offset, (kind, data) in enumerate(events)
        ]
        await self._events.insert_many(docs, session=session)
        return docs

    async def touch(self, session: Any, chatbot_id: str, now: datetime) -> None:
        """Write the chatbot's sequence document without taking a number (see append):
        a transaction that does conflicts with every other write of the chatbot."""
        await self._sequences.update_one(
            {"_id": chatbot_id}, {"$set": {"touchedAt": now}}, upsert=True, session=session
        )

    async def redact(self, session: Any, chatbot_id: str, lead_ids: list[str]) -> None:
        """Reduce the stored events of these (deleted) leads to ``redacted`` data, in
        ``session``'s transaction: one round trip, one ``by_lead`` read per lead."""
        if lead_ids:
            await self._events.bulk_write(
                [
                    UpdateMany(
                        lead_events(chatbot_id, lead_id), {"$set": {"data": redacted(lead_id)}}
                    )
                    for lead_id in lead_ids
                ],
                ordered=False,
                session=session,
            )

    @store_errors
    async def feed(self, *, chatbot_id: str, after: int, limit: int) -> list[dict[str, Any]]:
        """The chatbot's events with a sequence above ``after``, in order, at most ``limit``."""
        cursor = self._events.find(
            {"chatbotId": chatbot_id, "sequence": {"$gt": after}},
            {"pending": 0},
            sort=[("sequence", 1)],
            limit=limit,
        )
        return [doc async for doc in cursor]


event_log_key = web.AppKey("event_log", EventLog)


# Notified by this process's lead writes; wakes its webhook dispatcher.
events_committed_key = web.AppKey("events_committed", EventSignal)
