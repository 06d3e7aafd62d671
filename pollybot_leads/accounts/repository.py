"""Workspaces, chatbots and API keys: who may touch which leads."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from .. import ids
from ..errors import ApiKeyNotFound, ChatbotNotFound, NotFound, ValidationFailed, WorkspaceNotFound
from ..http.context import SCOPES, AdminKeyRecord, ApiKeyRecord
from ..store.client import Mongo, store_errors
from ..store.driver import ASCENDING, IndexModel
from ..timeutil import utcnow

ACCOUNT_INDEXES = {
    "api_keys": [
        # A key's secret, and a rolled key's previous one while it works (roll_key):
        # one indexed read finds either, so a bad secret costs the store one read.
        IndexModel([("digest", ASCENDING)], name="by_digest", unique=True),
        IndexModel([("workspaceId", ASCENDING), ("createdAt", ASCENDING)], name="by_workspace"),
    ],
    "chatbots": [IndexModel([("workspaceId", ASCENDING)], name="by_workspace")],
    "admin_keys": [IndexModel([("digest", ASCENDING)], name="by_digest", unique=True)],
}
# A rolled key's previous secret is kept as a document of its own in ``api_keys``:
# ``{_id: <key id>.old, aliasOf, aliasWorkspaceId, digest, aliasExpiresAt}`` (it has no
# ``workspaceId``: lists and counts of a workspace's keys never see it).
ALIAS_OF, ALIAS_SUFFIX = "aliasOf", ".old"
# How long a key's lastUsedAt may lag behind its use (contract: at most once a minute).
LAST_USED_EVERY = timedelta(minutes=1)
# How far a roll may keep the old secret working (contract: 0-604800 s).
ROLL_OVERLAP_MAX_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class IssuedKey:
    record: ApiKeyRecord
    secret: str  # shown once, never stored


def _key(doc: dict[str, Any], *, old_until: datetime | None = None) -> ApiKeyRecord:
    """The record of a key; ``old_until``: found by its previous secret, which works
    until then (and not past the key's own expiry)."""
    limit = doc.get("rateLimit") or {}
    scopes = doc.get("scopes")
    chatbots = doc.get("chatbotIds")
    expires_at = doc.get("expiresAt")
    if old_until is not None:
        expires_at = old_until if expires_at is None else min(expires_at, old_until)
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
        expires_at=expires_at,
        last_used_at=doc.get("lastUsedAt"),
    )


def _admin_key(doc: dict[str, Any]) -> AdminKeyRecord:
    return AdminKeyRecord(
        id=doc["_id"],
        name=doc["name"],
        created_at=doc["createdAt"],
        revoked_at=doc.get("revokedAt"),
    )


def _public(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A stored workspace or chatbot with its ``_id`` as ``id``."""
    return {"id": doc["_id"], **{k: v for k, v in doc.items() if k != "_id"}}


def _page(docs: list[dict[str, Any]], limit: int) -> tuple[list[dict[str, Any]], bool]:
    return docs[:limit], len(docs) > limit


class AccountRepository:
    """Workspaces, chatbots, workspace keys and admin keys as stored. A workspace or
    chatbot being deleted (``deletingAt`` set, admin/deletion.py removes it) is found
    by the admin API with its status, and by nothing else."""

    def __init__(self, mongo: Mongo) -> None:
        self._workspaces = mongo.db["workspaces"]
        self._chatbots = mongo.db["chatbots"]
        self._mongo = mongo
        self._keys = mongo.db["api_keys"]
        self._admin_keys = mongo.db["admin_keys"]

    # --- workspaces ------------------------------------------------------------------

    @store_errors
    async def create_workspace(self, *, name: str) -> dict[str, Any]:
        doc = {"_id": ids.new_id(ids.WORKSPACE), "name": name, "createdAt": utcnow()}
        await self._workspaces.insert_one(doc)
        return _public(doc)

    @store_errors
    async def workspace(self, *, workspace_id: str) -> dict[str, Any]:
        """The workspace's document, one being deleted included; else NotFound."""
        doc = None
        if ids.is_id(ids.WORKSPACE, workspace_id):
            doc = await self._workspaces.find_one({"_id": workspace_id})
        if doc is None:
            raise WorkspaceNotFound(f"No workspace {workspace_id}")
        return _public(doc)

    @store_errors
    async def require_workspace(self, *, workspace_id: str) -> None:
        """NotFound unless the workspace exists and is not being deleted."""
        if (await self.workspace(workspace_id=workspace_id)).get("deletingAt") is not None:
            raise WorkspaceNotFound(f"No workspace {workspace_id}: it is being deleted")

    @store_errors
    async def workspaces_page(
        self, *, after: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """Workspaces in id order after ``after``, and whether more follow."""
        query = {} if after is None else {"_id": {"$gt": after}}
        found = self._workspaces.find(query).sort("_id", 1).limit(limit + 1)
        return _page([_public(doc) async for doc in found], limit)

    @store_errors
    async def count_workspaces(self) -> int:
        count: int = await self._workspaces.count_documents({})
        return count

    @store_errors
    async def mark_workspace_deleting(self, *, workspace_id: str) -> dict[str, Any]:
        """Its keys revoked and the workspace marked: from now on only the deletion job
        touches it. Marking one already marked changes nothing."""
        doc = await self.workspace(workspace_id=workspace_id)
        now = utcnow()
        if doc.get("deletingAt") is None:
            await self._workspaces.update_one(
                {"_id": workspace_id, "deletingAt": None}, {"$set": {"deletingAt": now}}
            )
        await self._keys.update_many(
            {"workspaceId": workspace_id, "revokedAt": None}, {"$set": {"revokedAt": now}}
        )
        return await self.workspace(workspace_id=workspace_id)

    # --- chatbots --------------------------------------------------------------------

    @store_errors
    async def create_chatbot(
        self, *, workspace_id: str, name: str, default_region: str | None = None
    ) -> dict[str, Any]:
        await self.require_workspace(workspace_id=workspace_id)
        doc = {
            "_id": ids.new_id(ids.CHATBOT),
            "workspaceId": workspace_id,
            "name": name,
            "defaultRegion": default_region,
            "createdAt": utcnow(),
        }
        await self._chatbots.insert_one(doc)
        return _public(doc)

    @store_errors
    async def chatbot(self, *, chatbot_id: str) -> dict[str, Any]:
        """The chatbot's document, one being deleted included; else NotFound."""
        doc = None
        if ids.is_id(ids.CHATBOT, chatbot_id):
            doc = await self._chatbots.find_one({"_id": chatbot_id})
        if doc is None:
            raise ChatbotNotFound(f"No chatbot {chatbot_id}")
        return _public(doc)

    @store_errors
    async def chatbots(self, *, workspace_id: str) -> list[dict[str, Any]]:
        """The workspace's chatbots (those being deleted too), in id order."""
        found = self._chatbots.find({"workspaceId": workspace_id}).sort("_id", 1)
        return [_public(doc) async for doc in found]

    @store_errors
    async def update_chatbot(
        self, *, chatbot_id: str, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        """``changes`` of ``name`` and ``defaultRegion``; NotFound for one being deleted."""
        if (await self.chatbot(chatbot_id=chatbot_id)).get("deletingAt") is not None:
            raise ChatbotNotFound(f"No chatbot {chatbot_id}: it is being deleted")
        if changes:
            await self._chatbots.update_one({"_id": chatbot_id}, {"$set": dict(changes)})
        return await self.chatbot(chatbot_id=chatbot_id)

    @store_errors
    async def mark_chatbot_deleting(self, *, chatbot_id: str) -> dict[str, Any]:
        doc = await self.chatbot(chatbot_id=chatbot_id)
        if doc.get("deletingAt") is None:
            await self._chatbots.update_one(
                {"_id": chatbot_id, "deletingAt": None}, {"$set": {"deletingAt": utcnow()}}
            )
        return await self.chatbot(chatbot_id=chatbot_id)

    @store_errors
    async def chatbot_workspace(self, *, chatbot_id: str) -> str | None:
        """The workspace owning a chatbot, or None when there is no such chatbot (or it
        is being deleted)."""
        if not ids.is_id(ids.CHATBOT, chatbot_id):
            return None
        doc = await self._chatbots.find_one(
            {"_id": chatbot_id}, {"workspaceId": 1, "deletingAt": 1}
        )
        if doc is None or doc.get("deletingAt") is not None:
            return None
        workspace: str = doc["workspaceId"]
        return workspace

    @store_errors
    async def chatbot_ids(self, *, workspace_id: str) -> list[str]:
        """The ids of the workspace's chatbots, in id order."""
        found = self._chatbots.find({"workspaceId": workspace_id}, {"_id": 1}).sort("_id", 1)
        return [doc["_id"] async for doc in found]

    # --- workspace keys --------------------------------------------------------------

    async def _check_key_fields(
        self, workspace_id: str, scopes: Iterable[str] | None, chatbot_ids: Iterable[str] | None
    ) -> None:
        unknown = sorted(set(scopes or ()) - set(SCOPES))
        if unknown:
            raise ValidationFailed(
                f"Unknown scopes: {', '.join(unknown)}", details={"scopes": [f"Unknown: {unknown}"]}
            )
        for chatbot_id in sorted(set(chatbot_ids or ())):
            if await self.chatbot_workspace(chatbot_id=chatbot_id) != workspace_id:
                raise ValidationFailed(
                    f"No chatbot {chatbot_id} in workspace {workspace_id}",
                    details={"chatbotIds": [f"{chatbot_id} is not a chatbot of the workspace."]},
                )

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
        await self._check_key_fields(workspace_id, scopes, chatbot_ids)
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
            doc["chatbotIds"] = sorted(set(chatbot_ids))
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
        """The key whose secret has this SHA-256 digest (see ids.secret_digest): its
        current secret's, or a rolled key's previous one while that still works."""
        doc = await self._keys.find_one({"digest": digest})
        if doc is None or ALIAS_OF not in doc:
            return None if doc is None else _key(doc)
        until = doc["aliasExpiresAt"]
        key = await self._keys.find_one({"_id": doc[ALIAS_OF]})
        if until <= utcnow() or key is None:
            return None
        return _key(key, old_until=until)

    async def _own_key(self, key_id: str) -> dict[str, Any]:
        found = None
        if ids.is_id(ids.API_KEY, key_id):
            found = await self._keys.find_one({"_id": key_id})
        if found is None:
            raise ApiKeyNotFound(f"No API key {key_id}")
        return dict(found)

    @store_errors
    async def key(self, *, key_id: str) -> ApiKeyRecord:
        return _key(await self._own_key(key_id))

    @store_errors
    async def revoke_key(self, *, key_id: str) -> ApiKeyRecord:
        found = await self._own_key(key_id)
        if found.get("revokedAt") is None:
            await self._keys.update_one(
                {"_id": key_id, "revokedAt": None}, {"$set": {"revokedAt": utcnow()}}
            )
            found = await self._own_key(key_id)
        return _key(found)

    @store_errors
    async def update_key(self, *, key_id: str, changes: Mapping[str, Any]) -> ApiKeyRecord:
        """``changes`` of ``name``, ``scopes``, ``chatbot_ids``, ``expires_at`` and
        ``rate_limit`` (a dict, or None for the default); None clears the last three.
        A revoked key cannot be changed (NotFound)."""
        found = await self._own_key(key_id)
        if found.get("revokedAt") is not None:
            raise ApiKeyNotFound(f"No API key {key_id}: it is revoked")
        await self._check_key_fields(
            found["workspaceId"], changes.get("scopes"), changes.get("chatbot_ids")
        )
        names = {
            "name": "name",
            "scopes": "scopes",
            "chatbot_ids": "chatbotIds",
            "expires_at": "expiresAt",
            "rate_limit": "rateLimit",
        }
        sets: dict[str, Any] = {}
        unsets: dict[str, str] = {}
        for name, value in changes.items():
            field_name = names[name]
            if value is None and name != "name":
                unsets[field_name] = ""
            elif name in ("scopes", "chatbot_ids"):
                sets[field_name] = sorted(set(value))
            else:
                sets[field_name] = value
        update: dict[str, Any] = {}
        if sets:
            update["$set"] = sets
        if unsets:
            update["$unset"] = unsets
        if update:
            await self._keys.update_one({"_id": key_id}, update)
        return _key(await self._own_key(key_id))

    @store_errors
    async def roll_key(self, *, key_id: str, expire_old_in_seconds: int) -> IssuedKey:
        """A new secret for the key; the current one keeps working for
        ``expire_old_in_seconds`` (0: it stops at once). A secret rolled before and still
        working is replaced by this one: one previous secret at a time."""
        found = await self._own_key(key_id)
        if found.get("revokedAt") is not None:
            raise ApiKeyNotFound(f"No API key {key_id}: it is revoked")
        secret = ids.new_secret()
        alias = {
            "_id": key_id + ALIAS_SUFFIX,
            ALIAS_OF: key_id,
            "aliasWorkspaceId": found["workspaceId"],
            "digest": found["digest"],
            "aliasExpiresAt": utcnow() + timedelta(seconds=expire_old_in_seconds),
        }

        async def swap(session: Any) -> bool:
            """The new secret on the key and the old one on its alias, together."""
            await self._keys.delete_one({"_id": alias["_id"]}, session=session)
            result = await self._keys.update_one(
                {"_id": key_id, "digest": found["digest"], "revokedAt": None},
                {"$set": {"digest": ids.secret_digest(secret)}},
                session=session,
            )
            if result.matched_count and expire_old_in_seconds > 0:
                await self._keys.insert_one(alias, session=session)
            return bool(result.matched_count)

        if not await self._mongo.transaction(swap):  # revoked or rolled meanwhile
            raise ApiKeyNotFound(f"No API key {key_id} to roll: it changed meanwhile; try again")
        return IssuedKey(_key(await self._own_key(key_id)), secret)

    @store_errors
    async def old_secret_expiry(self, *, key_id: str) -> datetime | None:
        """When a rolled key's previous secret stops working (None: it does not)."""
        doc = await self._keys.find_one({"_id": key_id + ALIAS_SUFFIX}, {"aliasExpiresAt": 1})
        return None if doc is None else doc["aliasExpiresAt"]

    @store_errors
    async def set_rate_limit(
        self, *, key_id: str, capacity: int, refill_per_second: float
    ) -> ApiKeyRecord:
        return await self.update_key(
            key_id=key_id,
            changes={"rate_limit": {"capacity": capacity, "refillPerSecond": refill_per_second}},
        )

    @store_errors
    async def note_key_used(self, *, key_id: str, at: datetime) -> None:
        """Move lastUsedAt to ``at`` unless it moved less than LAST_USED_EVERY before."""
        await self._keys.update_one(
            {"_id": key_id, "lastUsedAt": {"$not": {"$gt": at - LAST_USED_EVERY}}},
            {"$set": {"lastUsedAt": at}},
        )

    @store_errors
    async def list_keys(self, *, workspace_id: str) -> list[ApiKeyRecord]:
        await self.workspace(workspace_id=workspace_id)
        cursor = self._keys.find({"workspaceId": workspace_id}, sort=[("createdAt", 1)])
        return [_key(doc) for doc in await cursor.to_list(length=None)]

    @store_errors
    async def count_keys(self, *, workspace_id: str) -> int:
        count: int = await self._keys.count_documents(
            {"workspaceId": workspace_id, "revokedAt": None}
        )
        return count

    # --- admin keys ------------------------------------------------------------------

    @store_errors
    async def create_admin_key(self, *, name: str) -> tuple[AdminKeyRecord, str]:
        secret = ids.new_secret(ids.ADMIN_SECRET_PREFIX)
        doc = {
            "_id": ids.new_id(ids.ADMIN_KEY),
            "name": name,
            "digest": ids.secret_digest(secret),
            "createdAt": utcnow(),
            "revokedAt": None,
        }
        await self._admin_keys.insert_one(doc)
        return _admin_key(doc), secret

    @store_errors
    async def admin_key_by_digest(self, *, digest: str) -> AdminKeyRecord | None:
        doc = await self._admin_keys.find_one({"digest": digest})
        return None if doc is None else _admin_key(doc)

    @store_errors
    async def revoke_admin_key(self, *, key_id: str) -> AdminKeyRecord:
        if not ids.is_id(ids.ADMIN_KEY, key_id):
            raise NotFound(f"No admin key {key_id}")
        await self._admin_keys.update_one(
            {"_id": key_id, "revokedAt": None}, {"$set": {"revokedAt": utcnow()}}
        )
        doc = await self._admin_keys.find_one({"_id": key_id})
        if doc is None:
            raise NotFound(f"No admin key {key_id}")
        return _admin_key(doc)


accounts_repo_key = web.AppKey("accounts_repo", AccountRepository)
