"""The delivery queue: events fanned out to endpoints, claimed under leases, finished.

One delivery document per (endpoint, event), ``_id: "<webhook id>:<event id>"``, so
fanning an event out again after a crash creates nothing twice (the duplicate inserts
are refused by the ``_id`` index and ignored). States: ``pending`` (due at ``dueAt``),
``delivered``, ``failed`` (given up, or the receiver answered 410), ``paused`` (its
endpoint was disabled when it was sent; enabling it makes them pending again). Claims
read enabled endpoints only: a disabled endpoint's pending deliveries wait as they are.

A claim reads each endpoint's due deliveries in a window (webhooks/due.py), then moves
their ``dueAt`` a lease ahead and stamps them with a random ``lease`` token, in one
transaction: no other process can claim them while the lease runs, and if the claimer
dies they are simply due again when the lease ends. Finishing reads and writes the
deliveries by ``_id`` in a transaction and applies only where the token is still the
claimer's. A replay that lands while a delivery is in flight bumps its ``version``;
the finish then leaves it pending, due at once.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from ..errors import AppError
from ..leads.event_log import EVENT_RETENTION_SECONDS
from ..store.client import Mongo, store_deadline
from ..store.driver import BulkWriteError, PyMongoError
from ..store.group_commit import GroupCommit, KeyedLocks
from ..timeutil import utcnow
from .due import DueWindows
from .pending import PendingWindow
from .repository import new_attempt_id

log = logging.getLogger(__name__)

DUPLICATE_KEY = 11000
# A lease that conflicts with a transaction left open gives up after this long.
STUCK_CLAIM_SECONDS = 0.5
CONFLICTS = (PyMongoError, AppError)  # a conflict outlasting the retries, or the deadline
FINISH_BATCH_MAX = 100
# A claimed delivery, its new state and due time, and the attempt to log (or None).
_Finish = tuple[dict[str, Any], str, "datetime | None", "dict[str, Any] | None"]
PENDING, DELIVERED, FAILED, PAUSED = "pending", "delivered", "failed", "paused"


def delivery_id(webhook_id: str, event_id: str) -> str:
    return f"{webhook_id}:{event_id}"


def _matches(endpoint: dict[str, Any], event: dict[str, Any]) -> bool:
    return (
        endpoint["workspaceId"] == event["workspaceId"]
        and event["type"] in endpoint["events"]
        and (not endpoint.get("chatbotIds") or event["chatbotId"] in endpoint["chatbotIds"])
    )


def _delivery(endpoint: dict[str, Any], event: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {
        "_id": delivery_id(endpoint["_id"], event["_id"]),
        "webhookId": endpoint["_id"],
        "workspaceId": event["workspaceId"],
        "chatbotId": event["chatbotId"],
        "eventId": event["_id"],
        "eventType": event["type"],
        "sequence": event["sequence"],
        "state": PENDING,
        "dueAt": now,
        "queuedAt": now,
        "attempts": 0,
        "version": 0,
    }


class DeliveryQueue:
    def __init__(
        self, mongo: Mongo, *, event_retention_seconds: int = EVENT_RETENTION_SECONDS
    ) -> None:
        self._mongo = mongo
        self._events = mongo.db["events"]
        self._webhooks = mongo.db["webhooks"]
        self._deliveries = mongo.db["webhook_deliveries"]
        self._attempts = mongo.db["webhook_attempts"]
        self._replays = mongo.db["webhook_replays"]
        self.pending = PendingWindow(mongo.db, retention_seconds=event_retention_seconds)
        # Deliveries whose lease conflicted with a transaction left open: until when
        # this process leaves them alone.
        self._stuck: dict[str, datetime] = {}
        self._due = DueWindows(self._deliveries)
        self._turn = 0
        self._finishes: GroupCommit[_Finish, bool] = GroupCommit(
            KeyedLocks(), self._write_finishes, max_batch=FINISH_BATCH_MAX
        )

    # --- fan-out -----------------------------------------------------------------------

    async def fan_out(self, *, limit: int | None = None) -> int:
        """Turn the pending events of the next window (webhooks/pending.py, at most
        ``limit``, by default its own) into deliveries; returns deliveries made.

        Crash-safe and safe to run in several processes at once: deliveries are
        inserted before the events lose ``pending``, and inserting one twice is a
        duplicate key, ignored.
        """
        batch = await self.pending.read(utcnow(), limit=limit)
        events = batch.events
        if not events:
            return 0
        workspaces = sorted({e["workspaceId"] for e in events})
        endpoints = [
            doc
            async for doc in self._webhooks.find({"workspaceId": {"$in": workspaces}})
            if doc["enabled"]
        ]
        now = utcnow()
        docs = [_delivery(ep, ev, now) for ev in events for ep in endpoints if _matches(ep, ev)]
        made = await self._insert_new(docs)
        self._due.fresh({d["webhookId"] for d in docs})
        marked = {"_id": {"$in": [e["_id"] for e in events]}}
        # In a transaction: outside one, the embedded store retries a multi-document
        # update's write conflicts while holding the collection, and a lead deletion's
        # transaction (it redacts these events, then appends its own) would wait for it
        # while it waits for the transaction: every write of the store stalled
        # (docs/load.md, section 5). In one, a conflict fails at once; made again later.
        await self._mongo.transaction(
            lambda session: self._events.update_many(
                marked, {"$unset": {"pending": ""}}, session=session
            )
        )
        await self.pending.passed(batch, now)
        return made

    async def _insert_new(self, docs: list[dict[str, Any]]) -> int:
        """Insert the deliveries that do not exist yet; returns how many were new."""
        if not docs:
            return 0
        try:
            result = await self._deliveries.insert_many(docs, ordered=False)
            return len(result.inserted_ids)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors") or []
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            return int(exc.details.get("nInserted", 0))

    # --- replays -----------------------------------------------------------------------

    async def advance_replays(self, *, page: int = 500) -> int:
        """Queue the next page of every replay requested; returns deliveries queued."""
        queued = 0
        async for job in self._replays.find({}, limit=50):
            endpoint = await self._webhooks.find_one({"_id": job["webhookId"]})
            if endpoint is None:
                await self._replays.delete_one({"_id": job["_id"]})
                continue
            events = await self._events.find(
                {"chatbotId": job["chatbotId"], "sequence": {"$gt": job["after"]}},
                sort=[("sequence", 1)],
                limit=page,
            ).to_list(None)
            matching = [e for e in events if _matches(endpoint, e)]
            queued += await self._requeue(endpoint, matching)
            # Only the job as read: a newer request for the same chatbot stays.
            if len(events) < page:
                await self._replays.delete_one({"_id": job["_id"], "after": job["after"]})
            else:
                await self._replays.update_one(
                    {"_id": job["_id"], "after": job["after"]},
                    {"$set": {"after": events[-1]["sequence"]}},
                )
        return queued

    async def _requeue(self, endpoint: dict[str, Any], events: list[dict[str, Any]]) -> int:
        """Deliveries of ``events`` to ``endpoint``, pending and due now, new or not."""
        if not events:
            return 0
        now = utcnow()
        docs = [_delivery(endpoint, e, now) for e in events]
        await self._insert_new(docs)
        self._due.fresh({endpoint["_id"]})

        async def reset(session: Any) -> None:
            cursor = self._deliveries.find(
                {"_id": {"$in": [d["_id"] for d in docs]}}, session=session
            )
            async for found in cursor:
                if found["state"] == PENDING and found["queuedAt"] == now:
                    continue  # just inserted
                sets: dict[str, Any] = {"state": PENDING, "attempts": 0, "queuedAt": now}
                if "lease" not in found:
                    sets["dueAt"] = now  # an in-flight one is made due by its finish
                await self._deliveries.update_one(
                    {"_id": found["_id"]}, {"$set": sets, "$inc": {"version": 1}}, session=session
                )

        await self._mongo.transaction(reset)
        return len(docs)

    # --- claims and outcomes -----------------------------------------------------------

    async def claim(
        self, *, limit: int, lease_seconds: float, room: Callable[[str], int] | None = None
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` due pending deliveries, leased to the caller (each with its
        ``lease`` token), the most overdue of each endpoint first; at most
        ``room(webhook id)`` of one endpoint (so that one slow endpoint cannot take every
        slot). Endpoints take turns to come first.

        Each enabled endpoint's due deliveries are read in a window of their own
        (webhooks/due.py), and one transaction leases those still due, in one write (a
        concurrent claimer makes it conflict and run again, then they are no longer due).
        """
        now = utcnow()
        self._stuck = {i: until for i, until in self._stuck.items() if until > now}
        enabled = [doc["_id"] async for doc in self._webhooks.find({"enabled": True})]
        self._turn += 1
        if enabled:
            turn = self._turn % len(enabled)
            enabled = enabled[turn:] + enabled[:turn]
        reads: list[tuple[str, list[dict[str, Any]], datetime]] = []
        candidates: list[str] = []
        for webhook_id in enabled:
            wanted = limit - len(candidates)
            if room is not None:
                wanted = min(wanted, room(webhook_id))
            if wanted <= 0 or self._due.idle(webhook_id, now):
                continue
            docs, high = await self._due.read(webhook_id, now)
            reads.append((webhook_id, docs, high))
            candidates += [d["_id"] for d in docs if d["_id"] not in self._stuck][:wanted]
            if len(candidates) >= limit:
                break
        claimed: list[dict[str, Any]] = []
        if candidates:
            claimed = await self._lease_around_held(candidates, now, lease_seconds)
        leased = {d["_id"] for d in claimed}
        for webhook_id, docs, high in reads:
            self._due.passed(webhook_id, docs, high, leased, now)
        return sorted(claimed, key=lambda d: d["queuedAt"])

    async def _lease_around_held(
        self, candidates: list[str], now: datetime, lease_seconds: float
    ) -> list[dict[str, Any]]:
        until = now + timedelta(seconds=lease_seconds)
        try:
            return await self._lease(candidates, now, until)
        except CONFLICTS:
            pass
        # One of them is held by a transaction still open, most likely of a process
        # that died in it (the store ends it after a minute): lease them one at a time,
        # and leave the held ones alone for a lease's time.
        claimed = []
        for one in candidates:
            try:
                with store_deadline(STUCK_CLAIM_SECONDS):
                    claimed += await self._lease([one], now, until)
            except CONFLICTS:
                self._stuck[one] = until
        log.warning(
            "%d of %d due deliveries held by an open transaction: skipped for %g s",
            len(candidates) - len(claimed),
            len(candidates),
            lease_seconds,
        )
        return claimed

    async def _lease(
        self, candidates: list[str], now: datetime, until: datetime
    ) -> list[dict[str, Any]]:
        token = secrets.token_hex(8)

        async def lease(session: Any) -> list[dict[str, Any]]:
            found = self._deliveries.find({"_id": {"$in": candidates}}, session=session)
            due = [doc async for doc in found if doc["state"] == PENDING and doc["dueAt"] <= now]
            if due:  # the others were claimed (or finished) by another process meanwhile
                await self._deliveries.update_many(
                    {"_id": {"$in": [doc["_id"] for doc in due]}},
                    {"$set": {"dueAt": until, "lease": token}},
                    session=session,
                )
            return [{**doc, "dueAt": until, "lease": token} for doc in due]

        return await self._mongo.transaction(lease)

    async def lookup(
        self, deliveries: list[dict[str, Any]]
    ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """The endpoints and the events of ``deliveries``, by id (two reads)."""
        webhook_ids = sorted({d["webhookId"] for d in deliveries})
        event_ids = sorted({d["eventId"] for d in deliveries})
        endpoints = {
            doc["_id"]: doc async for doc in self._webhooks.find({"_id": {"$in": webhook_ids}})
        }
        events = {doc["_id"]: doc async for doc in self._events.find({"_id": {"$in": event_ids}})}
        return endpoints, events

    async def finish(
        self,
        delivery: dict[str, Any],
        *,
        state: str,
        due_at: datetime | None,
        attempt: dict[str, Any] | None,
    ) -> bool:
        """Record the claimed ``delivery``'s outcome and its attempt; False when the
        lease was lost (the attempt is still logged). Outcomes that arrive while one is
        being written are committed together in the next transaction."""
        return await self._finishes.submit("finish", (delivery, state, due_at, attempt))

    async def _write_finishes(self, _key: str, batch: list[_Finish]) -> list[bool | Exception]:
        async def write(session: Any) -> list[bool | Exception]:
            now = utcnow()
            attempts = [
                {"_id": new_attempt_id(attempt["at"]), **attempt}
                for _, _, _, attempt in batch
                if attempt is not None
            ]
            if attempts:
                await self._attempts.insert_many(attempts, session=session)
            ids = [delivery["_id"] for delivery, _, _, _ in batch]
            current = {
                doc["_id"]: doc
                async for doc in self._deliveries.find({"_id": {"$in": ids}}, session=session)
            }
            outcomes: list[bool | Exception] = []
            # One write per distinct change (the delivered ones all share one).
            groups: dict[tuple[Any, ...], list[str]] = {}
            for delivery, state, due_at, attempt in batch:
                found = current.get(delivery["_id"])
                if found is None or found.get("lease") != delivery["lease"]:
                    outcomes.append(False)
                    continue
                change: tuple[Any, ...]
                if found.get("version", 0) != delivery.get("version", 0):
                    change = (PENDING, now, False)  # replayed while in flight
                else:
                    change = (state, due_at or now, attempt is not None)
                groups.setdefault(change, []).append(delivery["_id"])
                if change[0] == PENDING:
                    self._due.due_at(delivery["webhookId"], change[1])
                outcomes.append(True)
            for (state, due_at, counted), group in groups.items():
                update: dict[str, Any] = {
                    "$set": {"state": state, "dueAt": due_at},
                    "$unset": {"lease": ""},
                }
                if counted:
                    update["$inc"] = {"attempts": 1}
                await self._deliveries.update_many({"_id": {"$in": group}}, update, session=session)
            return outcomes

        return await self._mongo.transaction(write)

    async def drop(self, delivery: dict[str, Any]) -> None:
        """A delivery whose endpoint is gone."""
        await self._deliveries.delete_one({"_id": delivery["_id"]})

    async def disable_endpoint(self, webhook_id: str, reason: str) -> None:
        await self._webhooks.update_one(
            {"_id": webhook_id},
            {"$set": {"enabled": False, "disabledReason": reason, "updatedAt": utcnow()}},
        )

    async def counts(self) -> dict[str, int]:
        """Deliveries by state (tests and benchmarks)."""
        out = {}
        for state in (PENDING, DELIVERED, FAILED, PAUSED):
            out[state] = await self._deliveries.count_documents({"state": state})
        return out
