"""Webhook endpoints of a workspace, their signing secrets, replays and attempt log.

Stored endpoint: ``{_id: "wh_<16 hex>", workspaceId, url, description, events,
chatbotIds ([] = every chatbot of the workspace), enabled, disabledReason, createdAt,
updatedAt, secrets: [{value, createdAt, expiresAt}]}``, newest secret first; a rotated
secret keeps an ``expiresAt`` and signs beside the new one until then. Secrets are kept
as they are (HMAC needs them), unlike API keys, and never leave the store except in the
answer that creates them.

The delivery queue itself is ``webhooks/deliveries.py``.
"""

from __future__ import annotations

import builtins
import re
import secrets as random_secrets
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from .. import ids
from ..errors import ValidationFailed, WebhookNotFound
from ..store.client import Mongo, store_errors
from ..store.driver import ASCENDING, DESCENDING, IndexModel
from ..timeutil import utcnow
from .signing import new_secret

WEBHOOK = "wh_"
ATTEMPT = "att_"
WEBHOOK_ID_RE = re.compile(r"^wh_[0-9a-f]{16}\Z")
ENDPOINTS_MAX = 50  # per workspace
SECRET_OVERLAP = timedelta(hours=24)
SECRETS_MAX = 3
RETENTION_SECONDS = 30 * 24 * 3600
DELIVERY_CHUNK = 500  # an endpoint's deliveries resumed or deleted per transaction

WEBHOOK_INDEXES = {
    "webhooks": [
        IndexModel([("workspaceId", ASCENDING), ("createdAt", ASCENDING)], name="by_workspace")
    ],
    # Claims read each endpoint's due deliveries by due time (webhooks/due.py); pause,
    # resume and deletes read one endpoint's.
    "webhook_deliveries": [
        IndexModel(
            [("webhookId", ASCENDING), ("state", ASCENDING), ("dueAt", ASCENDING)],
            name="by_webhook",
        ),
        IndexModel([("queuedAt", ASCENDING)], name="expiry", expireAfterSeconds=RETENTION_SECONDS),
    ],
    # Attempt ids begin with their time: one endpoint's log pages by _id, newest first.
    "webhook_attempts": [
        IndexModel([("webhookId", ASCENDING), ("_id", DESCENDING)], name="by_webhook"),
        IndexModel([("at", ASCENDING)], name="expiry", expireAfterSeconds=RETENTION_SECONDS),
    ],
}


# Indexes an earlier version created and no query reads any more: (state, dueAt), now
# that webhooks/due.py reads by_webhook.
WEBHOOK_RETIRED_INDEXES = {"webhook_deliveries": ("due",)}


def new_attempt_id(at: datetime) -> str:
    """``att_`` + 13-digit Unix milliseconds + 8 random hex: ids sort by time."""
    return f"{ATTEMPT}{int(at.timestamp() * 1000):013d}{random_secrets.token_hex(4)}"


def active_secrets(doc: dict[str, Any], now: datetime) -> list[str]:
    """The secrets that sign now, newest first."""
    return [
        s["value"]
        for s in doc.get("secrets", [])
        if s.get("expiresAt") is None or s["expiresAt"] > now
    ]


def endpoint_view(doc: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """An endpoint as the API shows it (datetimes as datetimes, no secrets)."""
    now = now or utcnow()
    previous = [
        s["expiresAt"]
        for s in doc.get("secrets", [])
        if s.get("expiresAt") is not None and s["expiresAt"] > now
    ]
    return {
        "id": doc["_id"],
        "workspaceId": doc["workspaceId"],
        "url": doc["url"],
        "description": doc.get("description"),
        "events": list(doc["events"]),
        "chatbotIds": list(doc.get("chatbotIds", [])),
        "enabled": doc["enabled"],
        "disabledReason": doc.get("disabledReason"),
        "createdAt": doc["createdAt"],
        "updatedAt": doc["updatedAt"],
        "previousSecretExpiresAt": max(previous) if previous else None,
    }


class WebhookRepository:
    def __init__(self, mongo: Mongo) -> None:
        self._mongo = mongo
        self._webhooks = mongo.db["webhooks"]
        self._deliveries = mongo.db["webhook_deliveries"]
        self._attempts = mongo.db["webhook_attempts"]
        self._replays = mongo.db["webhook_replays"]
        # The account repository's collection, read here for the workspace's chatbots.
        self._chatbots = mongo.db["chatbots"]

    async def _own(self, workspace_id: str, webhook_id: str) -> dict[str, Any]:
        """The workspace's endpoint, or WebhookNotFound (also for another workspace's)."""
        if not WEBHOOK_ID_RE.match(webhook_id):
            raise WebhookNotFound()
        doc = await self._webhooks.find_one({"_id": webhook_id})
        if doc is None or doc["workspaceId"] != workspace_id:
            raise WebhookNotFound()
        found: dict[str, Any] = doc
        return found

    @store_errors
    async def workspace_of(self, *, webhook_id: str) -> str:
        """The endpoint's workspace (admin commands name an endpoint by id alone)."""
        doc = (
            await self._webhooks.find_one({"_id": webhook_id})
            if WEBHOOK_ID_RE.match(webhook_id)
            else None
        )
        if doc is None:
            raise WebhookNotFound(f"No webhook endpoint {webhook_id}")
        workspace: str = doc["workspaceId"]
        return workspace

    async def _check_chatbots(self, workspace_id: str, chatbot_ids: list[str]) -> None:
        foreign = []
        for index, chatbot_id in enumerate(chatbot_ids):
            doc = None
            if ids.is_id(ids.CHATBOT, chatbot_id):
                doc = await self._chatbots.find_one({"_id": chatbot_id}, {"workspaceId": 1})
            if doc is None or doc["workspaceId"] != workspace_id:
                foreign.append(index)
        if foreign:
            raise ValidationFailed(
                details={
                    "chatbotIds": {str(i): ["No such chatbot in this workspace."] for i in foreign}
                }
            )

    @store_errors
    async def create(
        self,
        *,
        workspace_id: str,
        url: str,
        events: list[str],
        chatbot_ids: list[str],
        description: str | None,
        enabled: bool = True,
        limit: int = ENDPOINTS_MAX,
    ) -> tuple[dict[str, Any], str]:
        """A new endpoint and its signing secret (returned here only); a workspace has
        at most ``limit`` endpoints."""
        await self._check_chatbots(workspace_id, chatbot_ids)
        if await self._webhooks.count_documents({"workspaceId": workspace_id}) >= limit:
            raise ValidationFailed(f"A workspace has at most {limit} webhook endpoints")
        now, secret = utcnow(), new_secret()
        doc = {
            "_id": ids.new_id(WEBHOOK),
            "workspaceId": workspace_id,
            "url": url,
            "description": description,
            "events": events,
            "chatbotIds": chatbot_ids,
            "enabled": enabled,
            "disabledReason": None,
            "createdAt": now,
            "updatedAt": now,
            "secrets": [{"value": secret, "createdAt": now, "expiresAt": None}],
        }
        await self._webhooks.insert_one(doc)
        return endpoint_view(doc, now), secret

    @store_errors
    async def list(self, *, workspace_id: str) -> list[dict[str, Any]]:
        cursor = self._webhooks.find({"workspaceId": workspace_id}, sort=[("createdAt", 1)])
        now = utcnow()
        return [endpoint_view(doc, now) async for doc in cursor]

    @store_errors
    async def get(self, *, workspace_id: str, webhook_id: str) -> dict[str, Any]:
        return endpoint_view(await self._own(workspace_id, webhook_id))

    @store_errors
    async def update(
        self, *, workspace_id: str, webhook_id: str, changes: dict[str, Any]
    ) -> dict[str, Any]:
        """Change url, events, chatbotIds, enabled or description (those given)."""
        doc = await self._own(workspace_id, webhook_id)
        if "chatbotIds" in changes:
            await self._check_chatbots(workspace_id, changes["chatbotIds"])
        sets = {**changes, "updatedAt": max(utcnow(), doc["updatedAt"])}
        resume = changes.get("enabled") is True and not doc["enabled"]
        if "enabled" in changes:
            sets["disabledReason"] = None
        await self._webhooks.update_one({"_id": webhook_id}, {"$set": sets})
        if resume:  # deliveries held while it was disabled go out again
            paused = {"webhookId": webhook_id, "state": "paused"}
            await self._each_chunk_of_deliveries(
                paused,
                lambda chosen, session: self._deliveries.update_many(
                    {**chosen, "state": "paused"},
                    {"$set": {"state": "pending", "dueAt": utcnow()}},
                    session=session,
                ),
            )
        return endpoint_view({**doc, **sets})

    async def _each_chunk_of_deliveries(
        self,
        filter_: dict[str, Any],
        write: Callable[[dict[str, Any], Any], Awaitable[Any]],
    ) -> None:
        """``write`` the deliveries matching ``filter_``, :data:`DELIVERY_CHUNK` at a time,
        each chunk in a transaction. The sender changes deliveries in transactions of
        several statements; on the embedded store a multi-document write outside one
        retries a conflict with them while holding the collection, which such a
        transaction's next statement waits for: the store wedged (docs/load.md, section 5).
        In a transaction a conflict fails at once, and the chunk is tried again."""
        while True:
            found = self._deliveries.find(filter_, {"_id": 1}, limit=DELIVERY_CHUNK)
            ids = [doc["_id"] async for doc in found]
            if not ids:
                return
            chosen: dict[str, Any] = {"_id": {"$in": ids}}

            async def chunk(session: Any, chosen: dict[str, Any] = chosen) -> None:
                await write(chosen, session)

            await self._mongo.transaction(chunk)
            if len(ids) < DELIVERY_CHUNK:
                return

    @store_errors
    async def delete(self, *, workspace_id: str, webhook_id: str) -> None:
        """The endpoint, its queued deliveries, replays and attempt log."""
        await self._own(workspace_id, webhook_id)
        await self._webhooks.delete_one({"_id": webhook_id})
        await self._each_chunk_of_deliveries(
            {"webhookId": webhook_id},
            lambda chosen, session: self._deliveries.delete_many(chosen, session=session),
        )
        await self._replays.delete_many({"webhookId": webhook_id})
        await self._attempts.delete_many({"webhookId": webhook_id})

    @store_errors
    async def rotate_secret(
        self, *, workspace_id: str, webhook_id: str
    ) -> tuple[dict[str, Any], str]:
        """A new secret; the current ones keep signing for 24 h (at most 3 in all)."""
        doc = await self._own(workspace_id, webhook_id)
        now, secret = utcnow(), new_secret()
        kept = []
        for old in doc.get("secrets", []):
            expires = old.get("expiresAt") or now + SECRET_OVERLAP
            if expires > now:
                kept.append({**old, "expiresAt": min(expires, now + SECRET_OVERLAP)})
        fresh = [{"value": secret, "createdAt": now, "expiresAt": None}, *kept][:SECRETS_MAX]
        updated_at = max(now, doc["updatedAt"])
        await self._webhooks.update_one(
            {"_id": webhook_id}, {"$set": {"secrets": fresh, "updatedAt": updated_at}}
        )
        return endpoint_view({**doc, "secrets": fresh, "updatedAt": updated_at}, now), secret

    @store_errors
    async def request_replay(
        self, *, workspace_id: str, webhook_id: str, after: int
    ) -> builtins.list[str]:
        """Queue again every event after ``after`` of the endpoint's chatbots (done in the
        background by the dispatcher, see webhooks/deliveries.py); returns those chatbots."""
        doc = await self._own(workspace_id, webhook_id)
        chatbots = list(doc.get("chatbotIds") or [])
        if not chatbots:
            cursor = self._chatbots.find({"workspaceId": workspace_id}, {"_id": 1})
            chatbots = [c["_id"] async for c in cursor]
        now = utcnow()
        for chatbot_id in chatbots:
            await self._replays.update_one(
                {"_id": f"{webhook_id}:{chatbot_id}"},
                {
                    "$set": {"after": after, "requestedAt": now},
                    "$setOnInsert": {"webhookId": webhook_id, "chatbotId": chatbot_id},
                },
                upsert=True,
            )
        return chatbots

    @store_errors
    async def attempts(
        self, *, workspace_id: str, webhook_id: str, before: str | None, limit: int
    ) -> tuple[builtins.list[dict[str, Any]], bool]:
        """The endpoint's delivery attempts, newest first; and whether more are older."""
        await self._own(workspace_id, webhook_id)
        query: dict[str, Any] = {"webhookId": webhook_id}
        if before:
            query["_id"] = {"$lt": before}
        cursor = self._attempts.find(query, sort=[("_id", -1)], limit=limit + 1)
        found = [doc async for doc in cursor]
        return found[:limit], len(found) > limit


webhooks_repo_key = web.AppKey("webhooks_repo", WebhookRepository)
