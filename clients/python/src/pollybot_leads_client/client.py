"""``Client`` and ``AsyncClient``: the same resources, one sending with httpx's sync
client and the other with its async one; everything else is ``_core.py``'s."""

from __future__ import annotations

import builtins
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from ._core import Call, data_of, wire
from ._send import AsyncSender, SyncSender
from .models import (
    Attempt,
    BatchResult,
    DeletedLead,
    Duplicate,
    Event,
    Lead,
    Webhook,
    parse_time,
)
from .privacy import AsyncPrivacy, Privacy


def _leads_path(chatbot_id: str) -> str:
    return f"/api/v1/chatbots/{chatbot_id}/leads"


def _if_match(if_match: str | None) -> dict[str, str]:
    return {"If-Match": if_match} if if_match else {}


def _lead(response: httpx.Response) -> Lead:
    return Lead.from_json(data_of(response), response.headers.get("ETag"))


def _batch(response: httpx.Response) -> builtins.list[BatchResult]:
    return [
        BatchResult(
            r["index"],
            r["status"],
            Lead.from_json(r["lead"]) if r.get("lead") else None,
            r.get("error"),
        )
        for r in data_of(response)["results"]
    ]


def _deleted(response: httpx.Response) -> DeletedLead:
    data = data_of(response)
    return DeletedLead(data["id"], parse_time(data["deletedAt"]))


def _duplicates(response: httpx.Response) -> builtins.list[Duplicate]:
    return [
        Duplicate(Lead.from_json(d["lead"]), tuple(d["matchedOn"]))
        for d in data_of(response)["duplicates"]
    ]


class _Calls:
    """The calls of each operation (what both clients send)."""

    @staticmethod
    def create(chatbot_id: str, upsert: str | None, fields: dict[str, Any]) -> Call:
        params = {"upsert": upsert} if upsert else None
        return Call("POST", _leads_path(chatbot_id), params, wire(fields))

    @staticmethod
    def get(chatbot_id: str, lead_id: str) -> Call:
        return Call("GET", f"{_leads_path(chatbot_id)}/{lead_id}")

    @staticmethod
    def update(chatbot_id: str, lead_id: str, if_match: str | None, fields: Any) -> Call:
        path = f"{_leads_path(chatbot_id)}/{lead_id}"
        return Call("PUT", path, json=wire(fields), headers=_if_match(if_match))

    @staticmethod
    def delete(chatbot_id: str, lead_id: str, if_match: str | None) -> Call:
        path = f"{_leads_path(chatbot_id)}/{lead_id}"
        return Call("DELETE", path, {"confirm": "true"}, headers=_if_match(if_match))

    @staticmethod
    def page(chatbot_id: str, filters: dict[str, Any], cursor: str | None) -> Call:
        params = wire(filters)
        params.setdefault("limit", 100)
        if cursor:
            params["cursor"] = cursor
        return Call("GET", _leads_path(chatbot_id), params)

    @staticmethod
    def batch(chatbot_id: str, leads: builtins.list[dict[str, Any]], upsert: str | None) -> Call:
        body: dict[str, Any] = {"leads": [wire(lead) for lead in leads]}
        if upsert:
            body["upsert"] = upsert
        return Call("POST", _leads_path(chatbot_id) + "/batch", json=body)

    @staticmethod
    def merge(
        chatbot_id: str,
        lead_id: str,
        source_ids: builtins.list[str],
        dry_run: bool,
        if_match: str | None,
    ) -> Call:
        path = f"{_leads_path(chatbot_id)}/{lead_id}/merge"
        body = {"sourceIds": list(source_ids), "dryRun": dry_run}
        return Call("POST", path, json=body, headers=_if_match(if_match))

    @staticmethod
    def duplicates(chatbot_id: str, lead_id: str, limit: int) -> Call:
        path = f"{_leads_path(chatbot_id)}/{lead_id}/duplicates"
        return Call("GET", path, {"limit": limit})

    @staticmethod
    def export(chatbot_id: str, filters: dict[str, Any]) -> Call:
        params = wire(filters)
        params["format"] = "ndjson"
        return Call("GET", _leads_path(chatbot_id) + "/export", params)

    @staticmethod
    def webhook(method: str, webhook_id: str = "", tail: str = "", **kw: Any) -> Call:
        path = "/api/v1/webhooks" + (f"/{webhook_id}" if webhook_id else "") + tail
        return Call(method, path, **kw)

    @staticmethod
    def events(chatbot_id: str, after: int) -> Call:
        return Call("GET", f"/api/v1/chatbots/{chatbot_id}/events", {"after": after, "limit": 100})


# --- sync --------------------------------------------------------------------------------


class Client(SyncSender):
    """``Client(api_key=…, base_url=…, max_retries=2, timeout=10.0)``; use as a context
    manager, or call ``close()``."""

    def _attach(self) -> None:
        self.leads = Leads(self)
        self.events = Events(self)
        self.webhooks = Webhooks(self)
        self.privacy = Privacy(self)


class Leads:
    def __init__(self, client: Client) -> None:
        self._c = client

    def create(self, chatbot_id: str, **fields: Any) -> Lead:
        return _lead(self._c.send(_Calls.create(chatbot_id, None, fields)))

    def upsert(self, chatbot_id: str, on: str = "email", **fields: Any) -> Lead:
        return _lead(self._c.send(_Calls.create(chatbot_id, on, fields)))

    def get(self, chatbot_id: str, lead_id: str) -> Lead:
        return _lead(self._c.send(_Calls.get(chatbot_id, lead_id)))

    def update(
        self, chatbot_id: str, lead_id: str, if_match: str | None = None, **fields: Any
    ) -> Lead:
        return _lead(self._c.send(_Calls.update(chatbot_id, lead_id, if_match, fields)))

    def delete(self, chatbot_id: str, lead_id: str, if_match: str | None = None) -> DeletedLead:
        return _deleted(self._c.send(_Calls.delete(chatbot_id, lead_id, if_match)))

    def list(self, chatbot_id: str, **filters: Any) -> Iterator[Lead]:
        """Every lead matching ``filters``, paging by cursor as it goes."""
        cursor: str | None = None
        while True:
            data = data_of(self._c.send(_Calls.page(chatbot_id, filters, cursor)))
            yield from (Lead.from_json(lead) for lead in data["leads"])
            cursor = data["pagination"].get("nextCursor")
            if not cursor:
                return

    def batch(
        self, chatbot_id: str, leads: builtins.list[dict[str, Any]], upsert: str | None = None
    ) -> builtins.list[BatchResult]:
        return _batch(self._c.send(_Calls.batch(chatbot_id, leads, upsert)))

    def merge(
        self,
        chatbot_id: str,
        lead_id: str,
        source_ids: builtins.list[str],
        *,
        dry_run: bool = False,
        if_match: str | None = None,
    ) -> Lead:
        call = _Calls.merge(chatbot_id, lead_id, source_ids, dry_run, if_match)
        return _lead(self._c.send(call))

    def duplicates(
        self, chatbot_id: str, lead_id: str, limit: int = 20
    ) -> builtins.list[Duplicate]:
        return _duplicates(self._c.send(_Calls.duplicates(chatbot_id, lead_id, limit)))

    def export(self, chatbot_id: str, **filters: Any) -> Iterator[Lead]:
        """Every matching lead, streamed (NDJSON) as the server writes them."""
        for line in self._c.lines(_Calls.export(chatbot_id, filters)):
            yield Lead.from_json(json.loads(line))


class Events:
    def __init__(self, client: Client) -> None:
        self._c = client

    def list(self, chatbot_id: str, after: int = 0) -> Iterator[Event]:
        """The chatbot's events after sequence ``after``, in order, paging as it goes."""
        while True:
            data = data_of(self._c.send(_Calls.events(chatbot_id, after)))
            events = [Event.from_json(e) for e in data["events"]]
            yield from events
            if not events:
                return
            after = events[-1].sequence


def _webhook(response: httpx.Response) -> Webhook:
    return Webhook.from_json(data_of(response))


class Webhooks:
    """The workspace's webhook endpoints (a key not limited to chatbots)."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def create(self, url: str, **fields: Any) -> Webhook:
        """``events``, ``chatbot_ids``, ``description``, ``enabled``; the answer holds the
        signing secret (``secret``), shown only here and by ``rotate_secret``."""
        body = wire({"url": url, **fields})
        return _webhook(self._c.send(_Calls.webhook("POST", json=body)))

    def list(self) -> builtins.list[Webhook]:
        data = data_of(self._c.send(_Calls.webhook("GET")))
        return [Webhook.from_json(w) for w in data["webhooks"]]

    def get(self, webhook_id: str) -> Webhook:
        return _webhook(self._c.send(_Calls.webhook("GET", webhook_id)))

    def update(self, webhook_id: str, **fields: Any) -> Webhook:
        call = _Calls.webhook("PUT", webhook_id, json=wire(fields))
        return _webhook(self._c.send(call))

    def delete(self, webhook_id: str) -> None:
        data_of(self._c.send(_Calls.webhook("DELETE", webhook_id, params={"confirm": "true"})))

    def rotate_secret(self, webhook_id: str) -> Webhook:
        return _webhook(self._c.send(_Calls.webhook("POST", webhook_id, "/rotate-secret", json={})))

    def deliveries(self, webhook_id: str, limit: int = 100) -> builtins.list[Attempt]:
        call = _Calls.webhook("GET", webhook_id, "/deliveries", params={"limit": limit})
        return [Attempt.from_json(a) for a in data_of(self._c.send(call))["deliveries"]]

    def replay(self, webhook_id: str, after: int = 0) -> dict[str, Any]:
        call = _Calls.webhook("POST", webhook_id, "/replay", json={"after": after})
        result: dict[str, Any] = data_of(self._c.send(call))
        return result


# --- async -------------------------------------------------------------------------------


class AsyncClient(AsyncSender):
    """The same as ``Client``, awaited: ``async with AsyncClient(api_key=…) as c:``."""

    def _attach(self) -> None:
        self.leads = AsyncLeads(self)
        self.events = AsyncEvents(self)
        self.webhooks = AsyncWebhooks(self)
        self.privacy = AsyncPrivacy(self)


class AsyncLeads:
    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def create(self, chatbot_id: str, **fields: Any) -> Lead:
        return _lead(await self._c.send(_Calls.create(chatbot_id, None, fields)))

    async def upsert(self, chatbot_id: str, on: str = "email", **fields: Any) -> Lead:
        return _lead(await self._c.send(_Calls.create(chatbot_id, on, fields)))

    async def get(self, chatbot_id: str, lead_id: str) -> Lead:
        return _lead(await self._c.send(_Calls.get(chatbot_id, lead_id)))

    async def update(
        self, chatbot_id: str, lead_id: str, if_match: str | None = None, **fields: Any
    ) -> Lead:
        return _lead(await self._c.send(_Calls.update(chatbot_id, lead_id, if_match, fields)))

    async def delete(
        self, chatbot_id: str, lead_id: str, if_match: str | None = None
    ) -> DeletedLead:
        return _deleted(await self._c.send(_Calls.delete(chatbot_id, lead_id, if_match)))

    async def list(self, chatbot_id: str, **filters: Any) -> AsyncIterator[Lead]:
        cursor: str | None = None
        while True:
            data = data_of(await self._c.send(_Calls.page(chatbot_id, filters, cursor)))
            for lead in data["leads"]:
                yield Lead.from_json(lead)
            cursor = data["pagination"].get("nextCursor")
            if not cursor:
                return

    async def batch(
        self, chatbot_id: str, leads: builtins.list[dict[str, Any]], upsert: str | None = None
    ) -> builtins.list[BatchResult]:
        return _batch(await self._c.send(_Calls.batch(chatbot_id, leads, upsert)))

    async def merge(
        self,
        chatbot_id: str,
        lead_id: str,
        source_ids: builtins.list[str],
        *,
        dry_run: bool = False,
        if_match: str | None = None,
    ) -> Lead:
        call = _Calls.merge(chatbot_id, lead_id, source_ids, dry_run, if_match)
        return _lead(await self._c.send(call))

    async def duplicates(
        self, chatbot_id: str, lead_id: str, limit: int = 20
    ) -> builtins.list[Duplicate]:
        return _duplicates(await self._c.send(_Calls.duplicates(chatbot_id, lead_id, limit)))

    async def export(self, chatbot_id: str, **filters: Any) -> AsyncIterator[Lead]:
        async for line in self._c.lines(_Calls.export(chatbot_id, filters)):
            yield Lead.from_json(json.loads(line))


class AsyncEvents:
    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def list(self, chatbot_id: str, after: int = 0) -> AsyncIterator[Event]:
        while True:
            data = data_of(await self._c.send(_Calls.events(chatbot_id, after)))
            events = [Event.from_json(e) for e in data["events"]]
            for event in events:
                yield event
            if not events:
                return
            after = events[-1].sequence


class AsyncWebhooks:
    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def create(self, url: str, **fields: Any) -> Webhook:
        body = wire({"url": url, **fields})
        return _webhook(await self._c.send(_Calls.webhook("POST", json=body)))

    async def list(self) -> builtins.list[Webhook]:
        data = data_of(await self._c.send(_Calls.webhook("GET")))
        return [Webhook.from_json(w) for w in data["webhooks"]]

    async def get(self, webhook_id: str) -> Webhook:
        return _webhook(await self._c.send(_Calls.webhook("GET", webhook_id)))

    async def update(self, webhook_id: str, **fields: Any) -> Webhook:
        call = _Calls.webhook("PUT", webhook_id, json=wire(fields))
        return _webhook(await self._c.send(call))

    async def delete(self, webhook_id: str) -> None:
        call = _Calls.webhook("DELETE", webhook_id, params={"confirm": "true"})
        data_of(await self._c.send(call))

    async def rotate_secret(self, webhook_id: str) -> Webhook:
        call = _Calls.webhook("POST", webhook_id, "/rotate-secret", json={})
        return _webhook(await self._c.send(call))

    async def deliveries(self, webhook_id: str, limit: int = 100) -> builtins.list[Attempt]:
        call = _Calls.webhook("GET", webhook_id, "/deliveries", params={"limit": limit})
        return [Attempt.from_json(a) for a in data_of(await self._c.send(call))["deliveries"]]

    async def replay(self, webhook_id: str, after: int = 0) -> dict[str, Any]:
        call = _Calls.webhook("POST", webhook_id, "/replay", json={"after": after})
        result: dict[str, Any] = data_of(await self._c.send(call))
        return result
