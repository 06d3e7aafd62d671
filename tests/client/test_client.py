"""The Python client against a real server: every lead operation, paging, export, the
event feed, typed errors, retries that never write twice, webhook verification, and its
models held against the served OpenAPI document."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pollybot_leads_client import (
    ApiKey,
    AsyncClient,
    Attempt,
    AuditActor,
    AuditEntry,
    AuditTarget,
    AuthenticationError,
    BatchResult,
    Chatbot,
    Client,
    DeletedLead,
    Deletion,
    Duplicate,
    Erasure,
    Event,
    KeyRateLimit,
    Lead,
    NotFoundError,
    PreconditionFailedError,
    StatusChange,
    Suppression,
    Webhook,
    WebhookVerificationError,
    Workspace,
    WorkspaceCounts,
    verify_webhook,
)
from pollybot_leads_client._core import IN_PROGRESS_PATIENCE, Call, Core

from pollybot_leads.webhooks.signing import new_secret, signed_headers
from tests.conftest import Tenant, make_tenant


def base(api: TestClient) -> str:
    return str(api.make_url("")).rstrip("/")


@pytest.fixture
async def tenant(accounts) -> Tenant:
    return await make_tenant(accounts)


async def test_every_lead_operation_with_typed_answers_and_errors(api, tenant):
    async with AsyncClient(api_key=tenant.key, base_url=base(api)) as c:
        bot = tenant.chatbot_id
        lead = await c.leads.create(
            bot, name="Ada", email="ada@example.com", phone="+1 415 555 2671",
            external_id="crm-1", metadata={"plan": "pro"},
        )  # fmt: skip
        assert isinstance(lead, Lead) and lead.phone_e164 == "+14155552671"
        assert lead.external_id == "crm-1" and lead.created_at.tzinfo is not None
        assert lead.etag and lead.status_history[0].status == "new"
        got = await c.leads.get(bot, lead.id)
        assert got == lead
        changed = await c.leads.update(bot, lead.id, if_match=got.etag, status="contacted")
        assert changed.status == "contacted" and changed.etag != got.etag
        with pytest.raises(PreconditionFailedError) as stale:
            await c.leads.update(bot, lead.id, if_match=got.etag, status="lost")
        assert stale.value.status == 412 and stale.value.code == "PRECONDITION_FAILED"
        assert stale.value.request_id
        same = await c.leads.upsert(
            bot, on="externalId", name="Ada L", email="ada@example.com", external_id="crm-1"
        )
        assert same.id == lead.id and same.name == "Ada L"
        other = await c.leads.create(bot, name="Ada", email="ADA@example.com")
        found = await c.leads.duplicates(bot, lead.id)
        assert [(d.lead.id, d.matched_on) for d in found] == [(other.id, ("email",))]
        preview = await c.leads.merge(bot, lead.id, [other.id], dry_run=True)
        assert preview.id == lead.id and (await c.leads.get(bot, other.id)).id == other.id
        merged = await c.leads.merge(bot, lead.id, [other.id])
        assert merged.id == lead.id
        with pytest.raises(NotFoundError) as gone:
            await c.leads.get(bot, other.id)
        assert gone.value.code == "LEAD_MERGED" and gone.value.details == {"mergedInto": lead.id}
        results = await c.leads.batch(bot, [{"name": "B", "email": "b@example.com"}, {"name": ""}])
        assert [r.status for r in results] == [201, 400] and results[0].lead is not None
        deleted = await c.leads.delete(bot, lead.id)
        assert deleted.id == lead.id
        with pytest.raises(NotFoundError):
            await c.leads.get(bot, lead.id)
        events = [e async for e in c.events.list(bot)]
        assert all(isinstance(e, Event) for e in events)
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        assert "lead.merged" in {e.type for e in events}
    async with AsyncClient(api_key="sk-workspace_" + "x" * 43, base_url=base(api)) as bad:
        with pytest.raises(AuthenticationError) as refused:
            await bad.leads.get(tenant.chatbot_id, "lead_0000000000000000")
        assert refused.value.status == 401 and refused.value.code == "UNAUTHORIZED"


async def test_list_pages_by_cursor_and_the_sync_client_does_the_same(api, tenant):
    async with AsyncClient(api_key=tenant.key, base_url=base(api)) as c:
        made = {
            (await c.leads.create(tenant.chatbot_id, name=f"P{i}", email=f"p{i}@e.com")).id
            for i in range(7)
        }
        listed = [lead.id async for lead in c.leads.list(tenant.chatbot_id, limit=2)]
        assert sorted(listed) == sorted(made) and len(listed) == 7

    def sync_calls() -> tuple[list[str], list[str], int]:
        with Client(api_key=tenant.key, base_url=base(api)) as s:
            created = s.leads.create(tenant.chatbot_id, name="Sync", email="sync@e.com")
            pages = [lead.id for lead in s.leads.list(tenant.chatbot_id, limit=3)]
            exported = [lead.id for lead in s.leads.export(tenant.chatbot_id)]
            events = list(s.events.list(tenant.chatbot_id))
            assert s.leads.get(tenant.chatbot_id, created.id).email == "sync@e.com"
            return pages, exported, len(events)

    pages, exported, events = await asyncio.to_thread(sync_calls)
    assert len(pages) == 8 and sorted(exported) == sorted(pages) and events == 8


async def test_two_hundred_concurrent_creates_are_two_hundred_leads(api, tenant):
    async with AsyncClient(api_key=tenant.key, base_url=base(api)) as c:
        leads = await asyncio.gather(
            *(
                c.leads.create(tenant.chatbot_id, name=f"C{i}", email=f"c{i}@e.com")
                for i in range(200)
            )
        )
        assert len({lead.id for lead in leads}) == 200
        assert len([lead async for lead in c.leads.list(tenant.chatbot_id)]) == 200


async def test_a_retry_after_a_lost_answer_writes_once(api, tenant):
    """A proxy passes the first POST to the server, then drops the connection instead of
    answering: the client tries again with the same Idempotency-Key and gets the kept
    result, not a second lead."""
    seen: list[str] = []

    async def proxy(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
        }
        resp = await api.request(request.method, request.path_qs, data=body, headers=headers)
        payload = await resp.read()
        seen.append(request.headers.get("Idempotency-Key", ""))
        if request.method == "POST" and len(seen) == 1:
            assert request.transport is not None
            request.transport.close()  # the answer is lost
            raise ConnectionResetError
        out = web.Response(body=payload, status=resp.status)
        for name in ("Content-Type", "ETag", "X-Request-Id"):
            if name in resp.headers:
                out.headers[name] = resp.headers[name]
        return out

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy)
    server = TestServer(app)
    await server.start_server()
    try:
        url = str(server.make_url("")).rstrip("/")
        async with AsyncClient(api_key=tenant.key, base_url=url, max_retries=2) as c:
            lead = await c.leads.create(tenant.chatbot_id, name="Once", email="once@e.com")
    finally:
        await server.close()
    assert len(seen) >= 2 and len(set(seen[:2])) == 1 and seen[0]
    async with AsyncClient(api_key=tenant.key, base_url=base(api)) as c:
        assert [x.id async for x in c.leads.list(tenant.chatbot_id)] == [lead.id]


def test_verify_webhook_checks_both_signatures_and_the_time():
    secret = new_secret()
    body = json.dumps({"id": "evt_1", "type": "lead.created"}).encode()
    now = int(time.time())
    headers = signed_headers([secret], "evt_1", now, body)
    assert verify_webhook(body, headers, secret)["id"] == "evt_1"
    own = {k: v for k, v in headers.items() if not k.startswith("webhook-")}
    assert verify_webhook(body, own, secret)["type"] == "lead.created"
    for bad_body, bad_headers, bad_secret in (
        (body + b" ", headers, secret),
        (body, headers, new_secret()),
        (body, signed_headers([secret], "evt_1", now - 3600, body), secret),
        (body, {}, secret),
        (body, headers, "not-a-secret"),
    ):
        with pytest.raises(WebhookVerificationError):
            verify_webhook(bad_body, bad_headers, bad_secret)


async def test_the_models_have_every_field_of_the_served_document(api):
    spec = await (await api.get("/api/docs/openapi.json")).json()
    schemas = spec["components"]["schemas"]

    def snake(name: str) -> str:
        return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)

    def fields_of(model: Any) -> set[str]:
        return {f.name for f in dataclasses.fields(model)}

    assert {snake(p) for p in schemas["Lead"]["properties"]} == fields_of(Lead) - {"etag"}
    event = {snake(p) for p in schemas["Event"]["properties"]} - {"event"}  # the upper-case name
    assert event == fields_of(Event)
    assert {snake(p) for p in schemas["WebhookWithSecret"]["properties"]} == fields_of(Webhook)
    assert {snake(p) for p in schemas["Attempt"]["properties"]} == fields_of(Attempt)
    for schema, model in (
        ("BatchResult", BatchResult),
        ("Deleted", DeletedLead),
        ("Duplicate", Duplicate),
        ("StatusChange", StatusChange),
        ("ErasureResult", Erasure),
        ("Suppression", Suppression),
        ("WorkspaceDetail", Workspace),
        ("Counts", WorkspaceCounts),
        ("Deletion", Deletion),
        ("ChatbotDetail", Chatbot),
        ("RolledKey", ApiKey),
        ("KeyRateLimit", KeyRateLimit),
        ("AuditEntry", AuditEntry),
        ("AuditActor", AuditActor),
        ("AuditTarget", AuditTarget),
    ):
        assert {snake(p) for p in schemas[schema]["properties"]} == fields_of(model), schema


async def test_webhook_endpoints_from_the_client(api, tenant):
    async with AsyncClient(api_key=tenant.key, base_url=base(api)) as c:
        made = await c.webhooks.create("http://127.0.0.1:9/hook", events=["lead.created"])
        assert made.secret and made.secret.startswith("whsec_") and made.events == ("lead.created",)
        assert [w.id for w in await c.webhooks.list()] == [made.id]
        got = await c.webhooks.get(made.id)
        assert got.secret is None and got.url == made.url
        changed = await c.webhooks.update(
            made.id, events=["lead.merged"], chatbot_ids=[tenant.chatbot_id]
        )
        assert changed.events == ("lead.merged",) and changed.chatbot_ids == (tenant.chatbot_id,)
        rotated = await c.webhooks.rotate_secret(made.id)
        assert rotated.secret and rotated.secret != made.secret
        assert rotated.previous_secret_expires_at is not None
        assert await c.webhooks.deliveries(made.id) == []
        assert (await c.webhooks.replay(made.id, after=0))["webhookId"] == made.id
        await c.webhooks.delete(made.id)
        with pytest.raises(NotFoundError):
            await c.webhooks.get(made.id)

    def sync_calls() -> list[str]:
        with Client(api_key=tenant.key, base_url=base(api)) as s:
            hook = s.webhooks.create("http://127.0.0.1:9/sync")
            s.webhooks.delete(hook.id)
            return [w.id for w in s.webhooks.list()]

    assert await asyncio.to_thread(sync_calls) == []


def test_a_key_still_running_is_asked_again_past_max_retries_within_the_patience():
    """409 IDEMPOTENCY_IN_PROGRESS: the server may hold a key 10 s after a request that
    failed without freeing it, so the client keeps asking (every Retry-After) for up to
    IN_PROGRESS_PATIENCE from the call's first try, whatever max_retries says (unless 0)."""
    body = {"success": False, "error": {"code": "IDEMPOTENCY_IN_PROGRESS", "message": "m"}}
    request = httpx.Request("POST", "http://h/")
    running = httpx.Response(409, headers={"Retry-After": "1"}, json=body, request=request)
    write = Call("POST", "/api/v1/chatbots/x/leads", json={})
    core = Core("sk-workspace_x", "http://h", max_retries=2, timeout=1)
    assert core.settle(write, 0, running, None, elapsed=0.0) == 1.0
    assert core.settle(write, 9, running, None, elapsed=IN_PROGRESS_PATIENCE - 1) == 1.0
    assert core.settle(write, 9, running, None, elapsed=IN_PROGRESS_PATIENCE - 0.5) is running
    never = Core("sk-workspace_x", "http://h", max_retries=0, timeout=1)
    assert never.settle(write, 0, running, None) is running
    conflict = httpx.Response(409, json={**body, "error": {"code": "DUPLICATE_EXTERNAL_ID"}})
    assert core.settle(write, 0, conflict, None) is conflict
