"""``AdminClient`` and ``AsyncAdminClient``: the admin API (``/api/v1/admin/…``) for the
platform that runs the service, with an admin key (``sk-admin_…``, made by
``pollybot-leads admin create-admin-key``). Sending, retries and errors are the
workspace clients'."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict
from typing import Any

from ._core import Call, data_of, wire
from ._send import AsyncSender, SyncSender
from .models import ApiKey, AuditEntry, Chatbot, KeyRateLimit, Workspace

BASE = "/api/v1/admin"
_CONFIRM = {"confirm": "true"}


def _key_fields(fields: dict[str, Any]) -> dict[str, Any]:
    limit = fields.get("rate_limit")
    if isinstance(limit, KeyRateLimit):
        fields = {**fields, "rate_limit": wire(asdict(limit))}
    return wire(fields)


class _Calls:
    """What both admin clients send for each operation. The admin API keeps no
    Idempotency-Key, so its creates and rolls are sent ``once`` (see ``Call``)."""

    @staticmethod
    def create_workspace(name: str) -> Call:
        return Call("POST", BASE + "/workspaces", json={"name": name}, once=True)

    @staticmethod
    def workspaces(cursor: str | None) -> Call:
        return Call("GET", BASE + "/workspaces", {"cursor": cursor, "limit": 100})

    @staticmethod
    def audit(after: str | None) -> Call:
        return Call("GET", BASE + "/audit", {"after": after, "limit": 100})

    @staticmethod
    def create_chatbot(workspace_id: str, name: str, default_region: str | None) -> Call:
        body = wire({"name": name, "default_region": default_region})
        return Call("POST", f"{BASE}/workspaces/{workspace_id}/chatbots", json=body, once=True)

    @staticmethod
    def create_key(workspace_id: str, name: str, fields: dict[str, Any]) -> Call:
        body = _key_fields({"name": name, **fields})
        return Call("POST", f"{BASE}/workspaces/{workspace_id}/keys", json=body, once=True)

    @staticmethod
    def roll_key(key_id: str, expire_old_in_seconds: int) -> Call:
        body = {"expireOldInSeconds": expire_old_in_seconds}
        return Call("POST", f"{BASE}/keys/{key_id}/roll", json=body, once=True)


def _workspace_page(data: dict[str, Any]) -> tuple[list[Workspace], str | None]:
    found = [Workspace.from_json(w) for w in data["workspaces"]]
    return found, data["pagination"].get("nextCursor")


def _audit_page(data: dict[str, Any]) -> tuple[list[AuditEntry], str | None]:
    return [AuditEntry.from_json(e) for e in data["entries"]], data["pagination"].get("nextAfter")


# --- sync --------------------------------------------------------------------------------


class AdminClient(SyncSender):
    """``AdminClient(api_key="sk-admin_…", base_url=…)``: ``workspaces``, ``chatbots``,
    ``keys`` and ``audit``; a context manager, like ``Client``."""

    def _attach(self) -> None:
        self.workspaces = Workspaces(self)
        self.chatbots = Chatbots(self)
        self.keys = Keys(self)
        self.audit = Audit(self)


class Workspaces:
    def __init__(self, client: SyncSender) -> None:
        self._c = client

    def create(self, name: str) -> Workspace:
        call = _Calls.create_workspace(name)
        return Workspace.from_json(data_of(self._c.send(call)))

    def list(self) -> Iterator[Workspace]:
        """Every workspace, in id order, paging by cursor as it goes."""
        cursor: str | None = None
        while True:
            found, cursor = _workspace_page(data_of(self._c.send(_Calls.workspaces(cursor))))
            yield from found
            if not cursor:
                return

    def get(self, workspace_id: str) -> Workspace:
        """With its ``counts``, and its ``deletion`` while one runs."""
        call = Call("GET", f"{BASE}/workspaces/{workspace_id}")
        return Workspace.from_json(data_of(self._c.send(call)))

    def delete(self, workspace_id: str) -> Workspace:
        """Its keys stop at once; its data goes in a background job (``get`` shows it)."""
        call = Call("DELETE", f"{BASE}/workspaces/{workspace_id}", _CONFIRM)
        return Workspace.from_json(data_of(self._c.send(call)))


class Chatbots:
    def __init__(self, client: SyncSender) -> None:
        self._c = client

    def create(self, workspace_id: str, name: str, default_region: str | None = None) -> Chatbot:
        call = _Calls.create_chatbot(workspace_id, name, default_region)
        return Chatbot.from_json(data_of(self._c.send(call)))

    def list(self, workspace_id: str) -> builtins.list[Chatbot]:
        call = Call("GET", f"{BASE}/workspaces/{workspace_id}/chatbots")
        return [Chatbot.from_json(c) for c in data_of(self._c.send(call))["chatbots"]]

    def get(self, chatbot_id: str) -> Chatbot:
        call = Call("GET", f"{BASE}/chatbots/{chatbot_id}")
        return Chatbot.from_json(data_of(self._c.send(call)))

    def update(self, chatbot_id: str, **fields: Any) -> Chatbot:
        """``name``, ``default_region`` (None: no region)."""
        call = Call("PATCH", f"{BASE}/chatbots/{chatbot_id}", json=wire(fields))
        return Chatbot.from_json(data_of(self._c.send(call)))

    def delete(self, chatbot_id: str) -> Chatbot:
        call = Call("DELETE", f"{BASE}/chatbots/{chatbot_id}", _CONFIRM)
        return Chatbot.from_json(data_of(self._c.send(call)))


class Keys:
    def __init__(self, client: SyncSender) -> None:
        self._c = client

    def create(self, workspace_id: str, name: str, **fields: Any) -> ApiKey:
        """``scopes``, ``chatbot_ids``, ``expires_at`` (an aware ``datetime``),
        ``rate_limit`` (a ``KeyRateLimit``); the answer's ``key`` is the secret, shown
        only here and by ``roll``."""
        call = _Calls.create_key(workspace_id, name, fields)
        return ApiKey.from_json(data_of(self._c.send(call)))

    def list(self, workspace_id: str) -> builtins.list[ApiKey]:
        call = Call("GET", f"{BASE}/workspaces/{workspace_id}/keys")
        return [ApiKey.from_json(k) for k in data_of(self._c.send(call))["keys"]]

    def update(self, key_id: str, **fields: Any) -> ApiKey:
        call = Call("PATCH", f"{BASE}/keys/{key_id}", json=_key_fields(fields))
        return ApiKey.from_json(data_of(self._c.send(call)))

    def revoke(self, key_id: str) -> ApiKey:
        return ApiKey.from_json(data_of(self._c.send(Call("DELETE", f"{BASE}/keys/{key_id}"))))

    def roll(self, key_id: str, expire_old_in_seconds: int = 0) -> ApiKey:
        """A new secret for the same key; the old one works ``expire_old_in_seconds`` more."""
        call = _Calls.roll_key(key_id, expire_old_in_seconds)
        return ApiKey.from_json(data_of(self._c.send(call)))


class Audit:
    def __init__(self, client: SyncSender) -> None:
        self._c = client

    def list(self, after: str | None = None) -> Iterator[AuditEntry]:
        """Admin actions and lead deletions after the record ``after``, oldest first."""
        while True:
            found, after = _audit_page(data_of(self._c.send(_Calls.audit(after))))
            yield from found
            if not after:
                return


# --- async -------------------------------------------------------------------------------


class AsyncAdminClient(AsyncSender):
    """The same as ``AdminClient``, awaited."""

    def _attach(self) -> None:
        self.workspaces = AsyncWorkspaces(self)
        self.chatbots = AsyncChatbots(self)
        self.keys = AsyncKeys(self)
        self.audit = AsyncAudit(self)


class AsyncWorkspaces:
    def __init__(self, client: AsyncSender) -> None:
        self._c = client

    async def create(self, name: str) -> Workspace:
        call = _Calls.create_workspace(name)
        return Workspace.from_json(data_of(await self._c.send(call)))

    async def list(self) -> AsyncIterator[Workspace]:
        cursor: str | None = None
        while True:
            page = data_of(await self._c.send(_Calls.workspaces(cursor)))
            found, cursor = _workspace_page(page)
            for each in found:
                yield each
            if not cursor:
                return

    async def get(self, workspace_id: str) -> Workspace:
        call = Call("GET", f"{BASE}/workspaces/{workspace_id}")
        return Workspace.from_json(data_of(await self._c.send(call)))

    async def delete(self, workspace_id: str) -> Workspace:
        call = Call("DELETE", f"{BASE}/workspaces/{workspace_id}", _CONFIRM)
        return Workspace.from_json(data_of(await self._c.send(call)))


class AsyncChatbots:
    def __init__(self, client: AsyncSender) -> None:
        self._c = client

    async def create(
        self, workspace_id: str, name: str, default_region: str | None = None
    ) -> Chatbot:
        call = _Calls.create_chatbot(workspace_id, name, default_region)
        return Chatbot.from_json(data_of(await self._c.send(call)))

    async def list(self, workspace_id: str) -> builtins.list[Chatbot]:
        call = Call("GET", f"{BASE}/workspaces/{workspace_id}/chatbots")
        return [Chatbot.from_json(c) for c in data_of(await self._c.send(call))["chatbots"]]

    async def get(self, chatbot_id: str) -> Chatbot:
        call = Call("GET", f"{BASE}/chatbots/{chatbot_id}")
        return Chatbot.from_json(data_of(await self._c.send(call)))

    async def update(self, chatbot_id: str, **fields: Any) -> Chatbot:
        call = Call("PATCH", f"{BASE}/chatbots/{chatbot_id}", json=wire(fields))
        return Chatbot.from_json(data_of(await self._c.send(call)))

    async def delete(self, chatbot_id: str) -> Chatbot:
        call = Call("DELETE", f"{BASE}/chatbots/{chatbot_id}", _CONFIRM)
        return Chatbot.from_json(data_of(await self._c.send(call)))


class AsyncKeys:
    def __init__(self, client: AsyncSender) -> None:
        self._c = client

    async def create(self, workspace_id: str, name: str, **fields: Any) -> ApiKey:
        call = _Calls.create_key(workspace_id, name, fields)
        return ApiKey.from_json(data_of(await self._c.send(call)))

    async def list(self, workspace_id: str) -> builtins.list[ApiKey]:
        call = Call("GET", f"{BASE}/workspaces/{workspace_id}/keys")
        return [ApiKey.from_json(k) for k in data_of(await self._c.send(call))["keys"]]

    async def update(self, key_id: str, **fields: Any) -> ApiKey:
        call = Call("PATCH", f"{BASE}/keys/{key_id}", json=_key_fields(fields))
        return ApiKey.from_json(data_of(await self._c.send(call)))

    async def revoke(self, key_id: str) -> ApiKey:
        call = Call("DELETE", f"{BASE}/keys/{key_id}")
        return ApiKey.from_json(data_of(await self._c.send(call)))

    async def roll(self, key_id: str, expire_old_in_seconds: int = 0) -> ApiKey:
        call = _Calls.roll_key(key_id, expire_old_in_seconds)
        return ApiKey.from_json(data_of(await self._c.send(call)))


class AsyncAudit:
    def __init__(self, client: AsyncSender) -> None:
        self._c = client

    async def list(self, after: str | None = None) -> AsyncIterator[AuditEntry]:
        while True:
            found, after = _audit_page(data_of(await self._c.send(_Calls.audit(after))))
            for each in found:
                yield each
            if not after:
                return
