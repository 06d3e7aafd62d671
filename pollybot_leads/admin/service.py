"""What the admin API does, in one place: its routes (admin/routes.py) and the CLI's
admin commands (admin/commands.py) both call it, so the two cannot drift apart.

Each change is audited (admin/audit.py) with its actor: the admin key of the request,
or the CLI. A change to a key, a chatbot or a workspace is seen at once by the process
that made it (its caches drop what they held) and by every other within the key cache
time (``auth.key_cache_seconds``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..accounts.auth import Authenticator
from ..accounts.repository import AccountRepository, IssuedKey
from ..http.context import ApiKeyRecord
from ..leads.repository import LeadRepository
from ..timeutil import format_ts
from .audit import AuditTrail
from .deletion import CHATBOT, WORKSPACE, DeletionJobs, job_json


@dataclass(frozen=True)
class Actor:
    """Who asks: an admin key (None: the CLI on the server) and the request's id."""

    admin_key_id: str | None = None
    request_id: str | None = None


CLI = Actor()


def key_json(key: ApiKeyRecord) -> dict[str, Any]:
    """A key as the admin API and CLI show it: never its secret."""
    rate_limit = None
    if key.rate_limit_capacity is not None or key.rate_limit_refill is not None:
        rate_limit = {"capacity": key.rate_limit_capacity, "refillPerSecond": key.rate_limit_refill}
    return {
        "id": key.id,
        "workspaceId": key.workspace_id,
        "name": key.name,
        "createdAt": format_ts(key.created_at),
        "revoked": key.revoked_at is not None,
        "revokedAt": None if key.revoked_at is None else format_ts(key.revoked_at),
        "scopes": sorted(key.scopes),
        "chatbotIds": None if key.chatbot_ids is None else sorted(key.chatbot_ids),
        "expiresAt": None if key.expires_at is None else format_ts(key.expires_at),
        "rateLimit": rate_limit,
        "lastUsedAt": None if key.last_used_at is None else format_ts(key.last_used_at),
    }


def _status(doc: Mapping[str, Any]) -> str:
    return "deleting" if doc.get("deletingAt") is not None else "active"


def chatbot_json(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": doc["id"],
        "workspaceId": doc["workspaceId"],
        "name": doc["name"],
        "defaultRegion": doc.get("defaultRegion"),
        "status": _status(doc),
        "createdAt": format_ts(doc["createdAt"]),
    }


def workspace_json(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": doc["id"],
        "name": doc["name"],
        "status": _status(doc),
        "createdAt": format_ts(doc["createdAt"]),
    }


def _target(kind: str, doc_id: str, workspace_id: str | None = None) -> dict[str, Any]:
    target = {"type": kind, "id": doc_id}
    if workspace_id is not None:
        target["workspaceId"] = workspace_id
    return target


def _key_details(key: ApiKeyRecord) -> dict[str, Any]:
    """What the audit keeps of a key: never a secret (nor its digest)."""
    shown = key_json(key)
    return {k: shown[k] for k in ("name", "scopes", "chatbotIds", "expiresAt", "rateLimit")}


class AdminService:
    def __init__(
        self,
        accounts: AccountRepository,
        leads: LeadRepository,
        audit: AuditTrail,
        jobs: DeletionJobs,
        authenticator: Authenticator | None = None,
    ) -> None:
        self.accounts, self.leads, self.audit, self.jobs = accounts, leads, audit, jobs
        # The serving process's: what it cached is dropped at once (None: the CLI).
        self._auth = authenticator

    async def _record(
        self, actor: Actor, action: str, target: dict[str, Any], details: Any = None
    ) -> None:
        await self.audit.record(
            action=action,
            target=target,
            admin_key_id=actor.admin_key_id,
            request_id=actor.request_id,
            details=details,
        )

    # --- workspaces ------------------------------------------------------------------

    async def create_workspace(self, actor: Actor, *, name: str) -> dict[str, Any]:
        doc = await self.accounts.create_workspace(name=name)
        await self._record(actor, "workspace.create", _target(WORKSPACE, doc["id"]), {"name": name})
        return await self.workspace(doc["id"])

    async def workspaces(self, *, after: str | None, limit: int) -> tuple[list[Any], bool]:
        docs, more = await self.accounts.workspaces_page(after=after, limit=limit)
        return [workspace_json(doc) for doc in docs], more

    async def workspace(self, workspace_id: str) -> dict[str, Any]:
        """The workspace with counts of its chatbots, active keys and leads, and its
        deletion job's progress while it is being deleted."""
        doc = await self.accounts.workspace(workspace_id=workspace_id)
        chatbots = [c for c in await self.accounts.chatbots(workspace_id=workspace_id)]
        leads = 0
        for chatbot in chatbots:
            leads += (await self.leads.read_counts(chatbot["id"], by_source=False))["total"]
        shown = workspace_json(doc)
        shown["counts"] = {
            "chatbots": sum(1 for c in chatbots if c.get("deletingAt") is None),
            "keys": await self.accounts.count_keys(workspace_id=workspace_id),
            "leads": leads,
        }
        job = await self.jobs.job(workspace_id) if doc.get("deletingAt") else None
        shown["deletion"] = None if job is None else job_json(job)
        return shown

    async def delete_workspace(self, actor: Actor, workspace_id: str) -> dict[str, Any]:
        """Its keys refused at once, its data removed by a background job."""
        await self.accounts.mark_workspace_deleting(workspace_id=workspace_id)
        if self._auth is not None:
            self._auth.forget_workspace(workspace_id)
        await self.jobs.schedule(kind=WORKSPACE, target_id=workspace_id, workspace_id=workspace_id)
        await self._record(actor, "workspace.delete", _target(WORKSPACE, workspace_id))
        return await self.workspace(workspace_id)

    # --- chatbots --------------------------------------------------------------------

    async def create_chatbot(
        self, actor: Actor, *, workspace_id: str, name: str, default_region: str | None = None
    ) -> dict[str, Any]:
        doc = await self.accounts.create_chatbot(
            workspace_id=workspace_id, name=name, default_region=default_region
        )
        target = _target(CHATBOT, doc["id"], workspace_id)
        await self._record(
            actor, "chatbot.create", target, {"name": name, "defaultRegion": default_region}
        )
        return chatbot_json(doc)

    async def chatbots(self, workspace_id: str) -> list[dict[str, Any]]:
        await self.accounts.workspace(workspace_id=workspace_id)
        return [chatbot_json(d) for d in await self.accounts.chatbots(workspace_id=workspace_id)]

    async def chatbot(self, chatbot_id: str) -> dict[str, Any]:
        doc = await self.accounts.chatbot(chatbot_id=chatbot_id)
        shown = chatbot_json(doc)
        job = await self.jobs.job(chatbot_id) if doc.get("deletingAt") else None
        shown["deletion"] = None if job is None else job_json(job)
        return shown

    async def update_chatbot(
        self, actor: Actor, chatbot_id: str, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        """``changes`` of ``name`` and ``defaultRegion`` (None: no region)."""
        stored = {{"default_region": "defaultRegion"}.get(k, k): v for k, v in changes.items()}
        doc = await self.accounts.update_chatbot(chatbot_id=chatbot_id, changes=stored)
        self.leads.regions.forget(chatbot_id)  # this process reads its phones anew at once
        target = _target(CHATBOT, chatbot_id, doc["workspaceId"])
        await self._record(actor, "chatbot.update", target, stored)
        return chatbot_json(doc)

    async def delete_chatbot(self, actor: Actor, chatbot_id: str) -> dict[str, Any]:
        doc = await self.accounts.mark_chatbot_deleting(chatbot_id=chatbot_id)
        if self._auth is not None:
            self._auth.forget_chatbot(chatbot_id)
        workspace_id = doc["workspaceId"]
        await self.jobs.schedule(kind=CHATBOT, target_id=chatbot_id, workspace_id=workspace_id)
        await self._record(actor, "chatbot.delete", _target(CHATBOT, chatbot_id, workspace_id))
        return await self.chatbot(chatbot_id)

    # --- keys ------------------------------------------------------------------------

    async def create_key(
        self, actor: Actor, *, workspace_id: str, **fields: Any
    ) -> tuple[dict[str, Any], str]:
        """``fields``: those of AccountRepository.create_key. The secret is returned
        here only."""
        issued = await self.accounts.create_key(workspace_id=workspace_id, **fields)
        await self._key_audit(actor, "key.create", issued.record)
        return key_json(issued.record), issued.secret

    async def keys(self, workspace_id: str) -> list[dict[str, Any]]:
        return [key_json(k) for k in await self.accounts.list_keys(workspace_id=workspace_id)]

    async def update_key(
        self, actor: Actor, key_id: str, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        key = await self.accounts.update_key(key_id=key_id, changes=changes)
        self._forget(key_id)
        await self._key_audit(actor, "key.update", key)
        return key_json(key)

    async def revoke_key(self, actor: Actor, key_id: str) -> dict[str, Any]:
        key = await self.accounts.revoke_key(key_id=key_id)
        self._forget(key_id)
        await self._key_audit(actor, "key.revoke", key)
        return key_json(key)

    async def roll_key(
        self, actor: Actor, key_id: str, *, expire_old_in_seconds: int
    ) -> tuple[dict[str, Any], str, str | None]:
        """A new secret for the key; the old one works ``expire_old_in_seconds`` more.
        Returns the key, its new secret and when the old one stops (None: at once)."""
        issued: IssuedKey = await self.accounts.roll_key(
            key_id=key_id, expire_old_in_seconds=expire_old_in_seconds
        )
        self._forget(key_id)
        until = await self.accounts.old_secret_expiry(key_id=key_id)
        await self._key_audit(
            actor,
            "key.roll",
            issued.record,
            {"oldSecretExpiresAt": None if until is None else format_ts(until)},
        )
        return key_json(issued.record), issued.secret, None if until is None else format_ts(until)

    async def _key_audit(
        self, actor: Actor, action: str, key: ApiKeyRecord, more: Mapping[str, Any] | None = None
    ) -> None:
        target = _target("apiKey", key.id, key.workspace_id)
        await self._record(actor, action, target, {**_key_details(key), **(more or {})})

    def _forget(self, key_id: str) -> None:
        if self._auth is not None:
            self._auth.forget_key(key_id)

    # --- admin keys (the CLI only) and the audit -------------------------------------

    async def create_admin_key(self, *, name: str) -> dict[str, Any]:
        record, secret = await self.accounts.create_admin_key(name=name)
        await self._record(CLI, "adminKey.create", _target("adminKey", record.id), {"name": name})
        return {
            "id": record.id,
            "name": name,
            "createdAt": format_ts(record.created_at),
            "key": secret,
        }

    async def revoke_admin_key(self, key_id: str) -> dict[str, Any]:
        record = await self.accounts.revoke_admin_key(key_id=key_id)
        await self._record(CLI, "adminKey.revoke", _target("adminKey", record.id))
        return {"id": record.id, "name": record.name, "revoked": True}

    async def audit_page(self, *, after: str | None, limit: int) -> tuple[list[Any], bool]:
        return await self.audit.page(after=after, limit=limit)
