"""The Python client's admin clients and privacy calls against a real server: every
operation, with two workspaces; and the admin creates, which the server keeps no
Idempotency-Key for, are never sent twice after a lost answer. (Their models are held
against the served OpenAPI document in test_client.py.)"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pollybot_leads_client import (
    AdminClient,
    APIConnectionError,
    ApiKey,
    AsyncAdminClient,
    AsyncClient,
    AuditEntry,
    AuthenticationError,
    BadRequestError,
    Chatbot,
    Client,
    Deletion,
    Erasure,
    KeyRateLimit,
    NotFoundError,
    PermissionDeniedError,
    Suppression,
    UnprocessableEntityError,
    Workspace,
    WorkspaceCounts,
)
from pollybot_leads_client._core import Call, Core

from pollybot_leads.accounts.repository import AccountRepository
from tests.conftest import make_tenant

from .test_client import base


@pytest.fixture
async def admin_key(accounts: AccountRepository) -> str:
    _, secret = await accounts.create_admin_key(name="client tests")
    return secret


async def test_every_admin_operation_from_the_async_client(api, admin_key):
    async with AsyncAdminClient(api_key=admin_key, base_url=base(api)) as a:
        made = await a.workspaces.create("Client Co")
        other = await a.workspaces.create("Other Co")
        assert isinstance(made, Workspace) and made.status == "active"
        assert made.counts == WorkspaceCounts(chatbots=0, keys=0, leads=0)
        listed = [w.id async for w in a.workspaces.list()]
        assert made.id in listed and other.id in listed
        bot = await a.chatbots.create(made.id, "Site bot", default_region="GB")
        assert isinstance(bot, Chatbot) and bot.default_region == "GB" and bot.deletion is None
        assert [b.id for b in await a.chatbots.list(made.id)] == [bot.id]
        assert await a.chatbots.list(other.id) == []
        changed = await a.chatbots.update(bot.id, name="Web bot", default_region=None)
        assert changed.name == "Web bot" and changed.default_region is None
        assert (await a.chatbots.get(bot.id)).name == "Web bot"

        expires = datetime.now(UTC) + timedelta(days=30)
        key = await a.keys.create(
            made.id, "reader", scopes=["leads:read"], chatbot_ids=[bot.id],
            expires_at=expires, rate_limit=KeyRateLimit(capacity=50, refill_per_second=5.0),
        )  # fmt: skip
        assert isinstance(key, ApiKey) and key.key and key.key.startswith("sk-workspace_")
        assert key.scopes == ("leads:read",) and key.chatbot_ids == (bot.id,)
        assert key.rate_limit == KeyRateLimit(50, 5.0)
        assert key.expires_at is not None and abs(key.expires_at - expires) < timedelta(seconds=1)
        listed_keys = await a.keys.list(made.id)
        assert [k.id for k in listed_keys] == [key.id] and listed_keys[0].key is None
        widened = await a.keys.update(key.id, scopes=["leads:read", "leads:write"])
        assert widened.scopes == ("leads:read", "leads:write")

        async with AsyncClient(api_key=key.key, base_url=base(api)) as c:
            lead = await c.leads.create(bot.id, name="Via key", email="via@example.com")
        rolled = await a.keys.roll(key.id, expire_old_in_seconds=60)
        assert rolled.key and rolled.key != key.key and rolled.old_key_expires_at is not None
        for secret in (key.key, rolled.key):  # both work during the overlap
            async with AsyncClient(api_key=secret, base_url=base(api)) as c:
                assert (await c.leads.get(bot.id, lead.id)).id == lead.id
        revoked = await a.keys.revoke(key.id)
        assert revoked.revoked and revoked.revoked_at is not None
        async with AsyncClient(api_key=rolled.key, base_url=base(api), max_retries=0) as c:
            with pytest.raises(AuthenticationError):
                await c.leads.get(bot.id, lead.id)

        detail = await a.workspaces.get(made.id)
        assert detail.counts == WorkspaceCounts(chatbots=1, keys=0, leads=1)
        deleting = await a.chatbots.delete(bot.id)
        assert deleting.status == "deleting" and isinstance(deleting.deletion, Deletion)
        gone = await a.workspaces.delete(other.id)
        assert gone.status == "deleting"

        actions = [e async for e in a.audit.list()]
        assert all(isinstance(e, AuditEntry) for e in actions)
        ours = {made.id, other.id}
        mine = [e for e in actions if ours & {e.target.id, e.target.workspace_id}]
        assert [e.action for e in mine] == [
            "workspace.create", "workspace.create", "chatbot.create", "chatbot.update",
            "key.create", "key.update", "key.roll", "key.revoke", "chatbot.delete",
            "workspace.delete",
        ]  # fmt: skip
        assert {e.actor.type for e in mine} == {"adminKey"} and mine[0].target.id == made.id
        later = [e.id async for e in a.audit.list(after=actions[0].id)]
        assert later == [e.id for e in actions[1:]]

        with pytest.raises(NotFoundError) as missing:
            await a.workspaces.get("ws_0000000000000000")
        assert missing.value.code == "WORKSPACE_NOT_FOUND"
        with pytest.raises(BadRequestError):
            await a.keys.create(made.id, "bad", scopes=["leads:everything"])
        with pytest.raises(ValueError):
            await a.keys.create(made.id, "naive", expires_at=datetime(2030, 1, 1))


async def test_the_sync_admin_client_and_keys_in_the_wrong_place(api, admin_key, tenant):
    def sync_calls() -> tuple[str, list[str]]:
        with AdminClient(api_key=admin_key, base_url=base(api)) as a:
            ws = a.workspaces.create("Sync Co")
            assert ws.id in [w.id for w in a.workspaces.list()]
            bot = a.chatbots.create(ws.id, "Bot")
            assert a.chatbots.update(bot.id, default_region="FR").default_region == "FR"
            assert [b.id for b in a.chatbots.list(ws.id)] == [bot.id]
            key = a.keys.create(ws.id, "all scopes")
            assert len(key.scopes) == 5 and a.keys.update(key.id, name="renamed").name == "renamed"
            assert [k.name for k in a.keys.list(ws.id)] == ["renamed"]
            rolled = a.keys.roll(key.id)
            assert a.keys.revoke(key.id).revoked
            assert a.workspaces.get(ws.id).counts == WorkspaceCounts(chatbots=1, keys=0, leads=0)
            assert a.chatbots.delete(bot.id).status == "deleting"
            assert a.workspaces.delete(ws.id).status == "deleting"
            audit = list(a.audit.list())
            assert [e.action for e in audit if ws.id in (e.target.id, e.target.workspace_id)][
                -2:
            ] == ["chatbot.delete", "workspace.delete"]
            return ws.id, [bot.id, key.id, rolled.id, a.chatbots.get(bot.id).id]

    ws_id, ids = await asyncio.to_thread(sync_calls)
    assert ids[1] == ids[2] and ids[0] == ids[3]
    async with AsyncAdminClient(api_key=tenant.key, base_url=base(api)) as workspace_key:
        with pytest.raises(AuthenticationError):  # a workspace key opens no admin route
            await workspace_key.workspaces.get(ws_id)
    async with AsyncClient(api_key=admin_key, base_url=base(api)) as admin_as_workspace:
        with pytest.raises(AuthenticationError):  # and an admin key no workspace route
            await admin_as_workspace.leads.get(tenant.chatbot_id, "lead_0000000000000000")


async def test_erasure_and_suppressions_stay_in_their_workspace(api, accounts, tenant):
    other = await make_tenant(accounts)
    async with (
        AsyncClient(api_key=tenant.key, base_url=base(api)) as c,
        AsyncClient(api_key=other.key, base_url=base(api)) as o,
    ):
        mine = await c.leads.create(tenant.chatbot_id, name="Ida", email="ida@example.com")
        theirs = await o.leads.create(other.chatbot_id, name="Ida", email="IDA@example.com")
        done = await c.privacy.erase(email="Ida@Example.com", suppress=True)
        assert done == Erasure(erased=1, lead_ids=(mine.id,), suppressed=True)
        with pytest.raises(NotFoundError):
            await c.leads.get(tenant.chatbot_id, mine.id)
        assert (await o.leads.get(other.chatbot_id, theirs.id)).email == "IDA@example.com"
        with pytest.raises(UnprocessableEntityError) as refused:
            await c.leads.create(tenant.chatbot_id, name="Ida", email="ida@example.com")
        assert refused.value.code == "SUPPRESSED"
        await o.leads.create(other.chatbot_id, name="Ida again", email="ida@example.com")
        listed = [s async for s in c.privacy.suppressions()]
        assert [s.kind for s in listed] == ["email"] and isinstance(listed[0], Suppression)
        assert [s async for s in o.privacy.suppressions()] == []
        with pytest.raises(NotFoundError):  # another workspace's suppression
            await o.privacy.lift_suppression(listed[0].id)
        await c.privacy.lift_suppression(listed[0].id)
        again = await c.leads.create(tenant.chatbot_id, name="Ida", email="ida@example.com")
        assert again.email == "ida@example.com"
        by_phone = await c.leads.create(
            tenant.chatbot_id, name="P", email="p@example.com", phone="+1 415 555 2671"
        )
        assert (await c.privacy.erase(phone="+14155552671")).lead_ids == (by_phone.id,)
        with pytest.raises(ValueError):
            await c.privacy.erase(email="a@example.com", phone="+14155552671")

    def sync_calls() -> tuple[int, int, int]:
        with Client(api_key=tenant.key, base_url=base(api)) as s:
            erased = s.privacy.erase(email="nobody@example.com", suppress=True).erased
            (suppression,) = s.privacy.suppressions()
            s.privacy.lift_suppression(suppression.id)
            return erased, suppression.kind == "email", len(list(s.privacy.suppressions()))

    assert await asyncio.to_thread(sync_calls) == (0, True, 0)
    limited = await make_tenant(accounts, scopes=["leads:read", "leads:write"])
    async with AsyncClient(api_key=limited.key, base_url=base(api)) as narrow:
        with pytest.raises(PermissionDeniedError) as denied:
            await narrow.privacy.erase(email="ida@example.com")
        assert denied.value.code == "INSUFFICIENT_SCOPE"


async def test_async_export_streams_every_lead(api, tenant):
    async with AsyncClient(api_key=tenant.key, base_url=base(api)) as c:
        made = {
            (await c.leads.create(tenant.chatbot_id, name=f"E{i}", email=f"e{i}@e.com")).id
            for i in range(5)
        }
        exported = [lead.id async for lead in c.leads.export(tenant.chatbot_id)]
        assert sorted(exported) == sorted(made)
        filtered = [x async for x in c.leads.export(tenant.chatbot_id, email="e3@e.com")]
        assert [(x.name, x.email) for x in filtered] == [("E3", "e3@e.com")]


async def test_an_admin_create_is_not_sent_again_after_a_lost_answer(
    api: TestClient, admin_key: str
):
    """The admin API keeps no Idempotency-Key, so a create whose answer is lost is not
    retried (a second try would make a second workspace): the caller gets the connection
    error and exactly one workspace exists."""
    posts = 0

    async def proxy(request: web.Request) -> web.StreamResponse:
        nonlocal posts
        body = await request.read()
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
        }
        resp = await api.request(request.method, request.path_qs, data=body, headers=headers)
        payload = await resp.read()
        if request.method == "POST":
            posts += 1
            assert "Idempotency-Key" not in request.headers
            assert request.transport is not None
            request.transport.close()  # the answer is lost
            raise ConnectionResetError
        return web.Response(body=payload, status=resp.status, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy)
    server = TestServer(app)
    await server.start_server()
    name = f"Lost answer {id(server)}"
    try:
        url = str(server.make_url("")).rstrip("/")
        async with AsyncAdminClient(api_key=admin_key, base_url=url, max_retries=3) as a:
            with pytest.raises(APIConnectionError):
                await a.workspaces.create(name)
    finally:
        await server.close()
    assert posts == 1
    async with AsyncAdminClient(api_key=admin_key, base_url=base(api)) as a:
        assert [w.name async for w in a.workspaces.list()].count(name) == 1


def test_a_call_sent_once_is_retried_only_when_it_surely_was_not_applied():
    core = Core("sk-admin_x", "http://h", max_retries=2, timeout=1)
    once = Call("POST", "/api/v1/admin/workspaces", json={}, once=True)
    request = httpx.Request("POST", "http://h/")
    assert "Idempotency-Key" not in core.headers(once)
    assert "Idempotency-Key" in core.headers(Call("POST", "/api/v1/chatbots/x/leads"))
    refused = httpx.Response(429, headers={"Retry-After": "1"}, request=request)
    assert core.settle(once, 0, refused, None) == 1.0
    unavailable = httpx.Response(503, headers={"Retry-After": "1"}, request=request)
    assert core.settle(once, 0, unavailable, None) is unavailable
    assert isinstance(core.settle(once, 0, None, httpx.ConnectError("refused")), float)
    with pytest.raises(APIConnectionError):
        core.settle(once, 0, None, httpx.ReadError("reset"))
    writes = Call("POST", "/api/v1/chatbots/x/leads", json={})
    assert core.settle(writes, 0, unavailable, None) == 1.0
    assert isinstance(core.settle(writes, 0, None, httpx.ReadError("reset")), float)
