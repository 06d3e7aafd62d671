"""Workspaces, chatbots and API keys: who may touch which leads."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from .. import ids
from ..errors import NotFound, ValidationFailed
from ..http.context import SCOPES, ApiKeyRecord
from ..store.client import Mongo, store_errors
from ..store.driver import ASCENDING, IndexModel
from ..timeutil import utcnow

ACCOUNT_INDEXES = {
    "api_keys": [
        IndexModel([("digest", ASCENDING)], name="by_digest", unique=True),
        IndexModel([("workspaceId", ASCENDING), ("createdAt", ASCENDING)], name="by_workspace"),
    ],
    "chatbots": [IndexModel([("workspaceId", ASCENDING)], name="by_workspace")],
}


@dataclass(frozen=True)
class IssuedKey:
    record: ApiKeyRecord
    secret: str  # shown once, never stored


def _key(doc: dict[str, Any]) -> ApiKeyRecord:
    limit = doc.get("rateLimit") or {}
    scopes = doc.get("scopes")
    chatbots = doc.get("chatbotIds")
    return ApiKeyRecord(
        id=doc["_id"],
        workspace_id=doc["workspaceId"],
        name=doc.get("name"),
        created_at=doc["createdAt"],
        revoked_at=doc.get("revokedAt"),
        rate_limit_capacity=limit.get("capacity"),
        rate_limit_refill=limit.get("refillPerSecond"),
        scopes=frozenset(SCOPES if scopes is None else scopes),
        chatbot_ids=None if chatbots is None else frozenset(chatbots),
        expires_at=doc.get("expiresAt"),
    )


class AccountRepository:
    def __init__(self, mongo: Mongo) -> None:
        self._workspaces = mongo.db["workspaces"]
        self._chatbots = mongo.db["chatbots"]
        self._keys = mongo.db["api_keys"]

    @store_errors
    async def create_workspace(self, *, name: str) -> dict[str, Any]:
        doc = {"_id": ids.new_id(ids.WORKSPACE), "name": name, "createdAt": utcnow()}
        await self._workspaces.insert_one(doc)
        return {"id": doc["_id"], "name": name}

    @store_errors
    async def require_workspace(self, *, workspace_id: str) -> None:
        if not ids.is_id(ids.WORKSPACE, workspace_id) or not await self._workspaces.find_one(
            {"_id": workspace_id}, {"_id": 1}
        ):
            raise NotFound(f"No workspace {workspace_id}")

    @store_errors
    async def create_chatbot(self, *, workspace_id: str, name: str) -> dict[str, Any]:
        await self.require_workspace(workspace_id=workspace_id)
        doc = {
            "_id": ids.new_id(ids.CHATBOT),
            "workspaceId": workspace_id,
            "name": name,
            "createdAt": utcnow(),
        }
        await self._chatbots.insert_one(doc)
        return {"id": doc["_id"], "workspaceId": workspace_id, "name": name}

    @store_errors
    async def chatbot_workspace(self, *, chatbot_id: str) -> str | None:
        """The workspace owning a chatbot, or None when there is no such chatbot."""
        if not ids.is_id(ids.CHATBOT, chatbot_id):
            return None
        doc = await self._chatbots.find_one({"_id": chatbot_id}, {"workspaceId": 1})
        return doc["workspaceId"] if doc else None

    @store_errors
    async def chatbot_ids(self, *, workspace_id: str) -> list[str]:
        """The ids of the workspace's chatbots, in id order."""
        found = self._chatbots.find({"workspaceId": workspace_id}, {"_id": 1}).sort("_id", 1)
        return [doc["_id"] async for doc in found]

    @store_errors
    async def count_workspaces(self) -> int:
        count: int = await self._workspaces.count_documents({})
        return count

    @store_errors
    async def create_key(
        self,
        *,
        workspace_id: str,
        name: str | None = None,
        rate_limit_capacity: int | None = None,
        rate_limit_refill: float | None = None,
        scopes: Iterable[str] | None = None,
        chatbot_ids: Iterable[str] | None = None,
        expires_at: datetime | None = None,
    ) -> IssuedKey:
        """A new key of the workspace; ``scopes`` None: all of them; ``chatbot_ids``
        None: every chatbot of the workspace (else only those, each of the workspace)."""
        await self.require_workspace(workspace_id=workspace_id)
        unknown = sorted(set(scopes or ()) - set(SCOPES))
        if unknown:
            raise ValidationFailed(f"Unknown scopes: {', '.join(unknown)}")
        if chatbot_ids is not None:
            chatbot_ids = sorted(set(chatbot_ids))
            for chatbot_id in chatbot_ids:
                if await self.chatbot_workspace(chatbot_id=chatbot_id) != workspace_id:
                    raise NotFound(f"No chatbot {chatbot_id} in workspace {workspace_id}")
        secret = ids.new_secret()
        doc: dict[str, Any] = {
            "_id": ids.new_id(ids.API_KEY),
            "workspaceId": workspace_id,
            "name": name,
            "digest": ids.secret_digest(secret),
            "createdAt": utcnow(),
            "revokedAt": None,
            "scopes": sorted(SCOPES if scopes is None else set(scopes)),
        }
        if chatbot_ids is not None:
            doc["chatbotIds"] = chatbot_ids
        if expires_at is not None:
            doc["expiresAt"] = expires_at
        if rate_limit_capacity is not None or rate_limit_refill is not None:
            doc["rateLimit"] = {
                "capacity": rate_limit_capacity,
                "refillPerSecond": rate_limit_refill,
            }
        await self._keys.insert_one(doc)
        return IssuedKey(_key(doc), secret)

    @store_errors
    async def key_by_digest(self, *, digest: str) -> ApiKeyRecord | None:
        """The key whose secret has this SHA-256 digest (see ids.secret_digest)."""
        doc = await self._keys.find_one({"digest": digest})
        return _key(doc) if doc else None

    @store_errors
    async def revoke_key(self, *, key_id: str) -> ApiKeyRecord:
        if not ids.is_id(ids.API_KEY, key_id):
            raise NotFound(f"No API key {key_id}")
        found = await self._keys.find_one({"_id": key_id})
        if found is None:
            raise NotFound(f"No API key {key_id}")
        if found.get("revokedAt") is None:
            await self._keys.update_one(
                {"_id": key_id, "revokedAt": None}, {"$set": {"revokedAt": utcnow()}}
            )
            found = await self._keys.find_one({"_id": key_id})
        return _key(found)

    @store_errors
    async def set_rate_limit(
        self, *, key_id: str, capacity: int, refill_per_second: float
    ) -> ApiKeyRecord:
        if not ids.is_id(ids.API_KEY, key_id):
            raise NotFound(f"No API key {key_id}")
        result = await self._keys.update_one(
            {"_id": key_id},
            {"$set": {"rateLimit": {"capacity": capacity, "refillPerSecond": refill_per_second}}},
        )
        if result.matched_count == 0:
            raise NotFound(f"No API key {key_id}")
        return _key(await self._keys.find_one({"_id": key_id}))

    @store_errors
    async def list_keys(self, *, workspace_id: str) -> list[ApiKeyRecord]:
        await self.require_workspace(workspace_id=workspace_id)
        cursor = self._keys.find({"workspaceId": workspace_id}, sort=[("createdAt", 1)])
        return [_key(doc) for doc in await cursor.to_list(length=None)]


accounts_repo_key = web.AppKey("accounts_repo", AccountRepository)
