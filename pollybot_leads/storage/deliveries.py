"""The delivery queue: events fanned out to endpoints, claimed under leases, finished.

One delivery document per (endpoint, event), ``_id: "<webhook id>:<event id>"``, so
fanning an event out again after a crash creates nothing twice (the duplicate inserts
are refused by the ``_id`` index and ignored). States: ``pending`` (due at ``dueAt``),
``delivered``, ``failed`` (given up, or the receiver answered 410), ``paused`` (its
endpoint is disabled; enabling it makes them pending again).

A claim moves ``dueAt`` a lease ahead and stamps the delivery with a random ``lease``
token in one atomic find-and-modify: no other process can claim it while the lease
runs, and if the claimer dies the delivery is simply due again when the lease ends.
Finishing reads and writes the delivery by ``_id`` in a transaction and applies only
when the token is still the claimer's. A replay that lands while a delivery is in
flight bumps its ``version``; the finish then leaves it pending, due at once.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import BulkWriteError

from ..domain.timeutil import utcnow
from .client import Mongo
from .webhooks import new_attempt_id

DUPLICATE_KEY = 11000
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
    def __init__(self, mongo: Mongo) -> None:
        self._mongo = mongo
        self._events = mongo.db["events"]
        self._webhooks = mongo.db["webhooks"]
        self._deliveries = mongo.db["webhook_deliveries"]
        self._attempts = mongo.db["webhook_attempts"]
        self._replays = mongo.db["webhook_replays"]

    # --- fan-out -----------------------------------------------------------------------

    async def fan_out(self, *, limit: int = 500) -> int:
        """Turn up to ``limit`` pending events into deliveries; returns deliveries made.

        Crash-safe and safe to run in several processes at once: deliveries are
        inserted before the events lose ``pending``, and inserting one twice is a
        duplicate key, ignored.
        """
        events = await self._events.find({"pending": True}, limit=limit).to_list(None)
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
        await self._events.update_many(
            {"_id": {"$in": [e["_id"] for e in events]}}, {"$unset": {"pending": ""}}
        )
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

    async def claim(self, *, lease_seconds: float) -> dict[str, Any] | None:
        """A due pending delivery, leased to the caller (its ``lease`` token), or None.

        No sort: the ``due`` index is read in ``dueAt`` order, so the first match is the
        most overdue one, and the server stops there (a sort would make SecantusDB read
        every due delivery first).
        """
        now = utcnow()
        return await self._deliveries.find_one_and_update(
            {"state": PENDING, "dueAt": {"$lte": now}},
            {
                "$set": {
                    "dueAt": now + timedelta(seconds=lease_seconds),
                    "lease": secrets.token_hex(8),
                }
            },
            return_document=ReturnDocument.AFTER,
        )

    async def endpoint(self, webhook_id: str) -> dict[str, Any] | None:
        return await self._webhooks.find_one({"_id": webhook_id})

    async def event(self, event_id: str) -> dict[str, Any] | None:
        return await self._events.find_one({"_id": event_id})

    async def finish(
        self,
        delivery: dict[str, Any],
        *,
        state: str,
        due_at: datetime | None,
        attempt: dict[str, Any] | None,
    ) -> bool:
        """Record the claimed ``delivery``'s outcome and its attempt; False when the
        lease was lost (the attempt is still logged)."""
        now = utcnow()

        async def write(session: Any) -> bool:
            if attempt is not None:
                doc = {"_id": new_attempt_id(attempt["at"]), **attempt}
                await self._attempts.insert_one(doc, session=session)
            current = await self._deliveries.find_one({"_id": delivery["_id"]}, session=session)
            if current is None or current.get("lease") != delivery["lease"]:
                return False
            sets: dict[str, Any]
            if current.get("version", 0) != delivery.get("version", 0):
                sets = {"state": PENDING, "dueAt": now}  # replayed while in flight
            else:
                sets = {"state": state, "dueAt": due_at or now}
                if attempt is not None:
                    sets["attempts"] = current.get("attempts", 0) + 1
            await self._deliveries.update_one(
                {"_id": delivery["_id"]}, {"$set": sets, "$unset": {"lease": ""}}, session=session
            )
            return True

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
