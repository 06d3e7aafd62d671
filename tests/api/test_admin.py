"""The admin API: provisioning and governing workspaces, chatbots and keys over HTTP,
only with an admin key; deletions as background jobs; the audit."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from pollybot_leads.accounts.repository import AccountRepository
from pollybot_leads.ids import secret_digest
from pollybot_leads.settings import Settings
from pollybot_leads.store.client import Mongo
from pollybot_leads.timeutil import format_ts, utcnow
from tests.conftest import own_database, serving
from tests.store_scan import copies_in_store, person, values_of

settings, mongo, accounts, api = own_database("admin")
A = "/api/v1/admin"


@pytest.fixture(scope="module")
async def admin_key(accounts: AccountRepository) -> str:
    _, secret = await accounts.create_admin_key(name="platform")
    return secret


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


class Admin:
    """The platform's side: admin calls that must succeed, answering their data."""

    def __init__(self, api: TestClient, secret: str) -> None:
        self.api, self.headers = api, bearer(secret)

    async def call(self, method: str, path: str, status: int, **kw: Any) -> Any:
        response = await self.api.request(method, A + path, headers=self.headers, **kw)
        body = await response.json()
        assert response.status == status, body
        return body["data"] if body["success"] else body["error"]

    async def tenant(self, **key: Any) -> tuple[str, str, dict[str, Any]]:
        """A workspace, a chatbot and a key (with ``key``'s fields): ids and the key."""
        ws = await self.call("POST", "/workspaces", 201, json={"name": "Acme"})
        bot = await self.call("POST", f"/workspaces/{ws['id']}/chatbots", 201, json={"name": "Web"})
        issued = await self.call("POST", f"/workspaces/{ws['id']}/keys", 201, json=key)
        return ws["id"], bot["id"], issued


@pytest.fixture
def admin(api: TestClient, admin_key: str) -> Admin:
    return Admin(api, admin_key)


async def status_of(api: TestClient, path: str, secret: str, **kw: Any) -> int:
    response = await api.request(kw.pop("method", "GET"), path, headers=bearer(secret), **kw)
    await response.read()
    return response.status


# --- who may call it ------------------------------------------------------------------


async def test_only_an_admin_key_opens_the_admin_api_and_it_opens_nothing_else(
    api: TestClient, admin: Admin, admin_key: str, accounts: AccountRepository
) -> None:
    _ws, bot, issued = await admin.tenant()
    workspace_key = issued["key"]
    assert await status_of(api, f"{A}/workspaces", workspace_key) == 401
    assert await status_of(api, f"{A}/workspaces", "sk-admin_" + "x" * 43) == 401
    response = await api.get(f"{A}/workspaces")
    assert response.status == 401
    assert (await response.json())["error"]["code"] == "UNAUTHORIZED"
    leads = f"/api/v1/chatbots/{bot}/leads"
    assert await status_of(api, leads, admin_key) == 401
    assert await status_of(api, leads, workspace_key) == 200
    # A revoked admin key is refused (by a server that has not cached it).
    record, secret = await accounts.create_admin_key(name="gone")
    await accounts.revoke_admin_key(key_id=record.id)
    assert await status_of(api, f"{A}/workspaces", secret) == 401


# --- from nothing to a customer's first lead ---------------------------------------------


async def test_a_platform_provisions_a_customer_with_http_calls_only(
    api: TestClient, admin: Admin
) -> None:
    ws = await admin.call("POST", "/workspaces", 201, json={"name": "  Acme Inc  "})
    assert ws["name"] == "Acme Inc" and ws["status"] == "active"
    assert ws["counts"] == {"chatbots": 0, "keys": 0, "leads": 0}
    bot = await admin.call(
        "POST",
        f"/workspaces/{ws['id']}/chatbots",
        201,
        json={"name": "Website", "defaultRegion": "GB"},
    )
    assert bot["defaultRegion"] == "GB" and bot["workspaceId"] == ws["id"]
    writer = await admin.call("POST", f"/workspaces/{ws['id']}/keys", 201, json={"name": "crm"})
    reader = await admin.call(
        "POST",
        f"/workspaces/{ws['id']}/keys",
        201,
        json={"name": "analytics", "scopes": ["leads:read"], "chatbotIds": [bot["id"]]},
    )
    assert writer["key"].startswith("sk-workspace_") and writer["scopes"] == sorted(
        ["leads:read", "leads:write", "webhooks:read", "webhooks:write", "privacy:write"]
    )
    assert reader["scopes"] == ["leads:read"] and reader["chatbotIds"] == [bot["id"]]

    leads = f"/api/v1/chatbots/{bot['id']}/leads"
    created = await api.post(
        leads, headers=bearer(writer["key"]), json={"name": "First", "email": "first@example.com"}
    )
    assert created.status == 201
    assert await status_of(api, leads, reader["key"]) == 200
    refused = await api.post(
        leads, headers=bearer(reader["key"]), json={"name": "No", "email": "no@example.com"}
    )
    assert refused.status == 403
    assert (await refused.json())["error"]["details"]["required"] == ["leads:write"]

    shown = await admin.call("GET", f"/workspaces/{ws['id']}", 200)
    assert shown["counts"] == {"chatbots": 1, "keys": 2, "leads": 1}
    listed = await admin.call("GET", f"/workspaces/{ws['id']}/keys", 200)
    assert [k["id"] for k in listed["keys"]] == [writer["id"], reader["id"]]
    assert all("key" not in k for k in listed["keys"])
    text = str(listed)
    assert writer["key"] not in text and secret_digest(writer["key"]) not in text
    # The key was used: lastUsedAt is written off the request, within moments.
    for _ in range(50):
        listed = await admin.call("GET", f"/workspaces/{ws['id']}/keys", 200)
        if listed["keys"][0]["lastUsedAt"] is not None:
            break
        await asyncio.sleep(0.05)
    assert listed["keys"][0]["lastUsedAt"] is not None
    chatbots = await admin.call("GET", f"/workspaces/{ws['id']}/chatbots", 200)
    assert [c["id"] for c in chatbots["chatbots"]] == [bot["id"]]


async def test_workspaces_page_by_cursor(admin: Admin) -> None:
    made = {
        (await admin.call("POST", "/workspaces", 201, json={"name": f"W{i}"}))["id"]
        for i in range(3)
    }
    seen: list[str] = []
    cursor = None
    while True:
        query = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = await admin.call("GET", "/workspaces", 200, params=query)
        seen += [w["id"] for w in page["workspaces"]]
        assert len(page["workspaces"]) <= 2
        if not page["pagination"]["hasMore"]:
            assert page["pagination"]["nextCursor"] is None
            break
        cursor = page["pagination"]["nextCursor"]
    assert made <= set(seen) and seen == sorted(seen) and len(seen) == len(set(seen))


# --- keys: change, revoke, roll, expire -----------------------------------------------------


async def test_a_revoked_or_narrowed_key_is_refused_at_once_by_the_process_that_changed_it(
    api: TestClient, admin: Admin
) -> None:
    _ws, bot, issued = await admin.tenant()
    leads = f"/api/v1/chatbots/{bot}/leads"
    assert await status_of(api, leads, issued["key"]) == 200  # cached now
    changed = await admin.call(
        "PATCH", f"/keys/{issued['id']}", 200, json={"scopes": ["webhooks:read"]}
    )
    assert changed["scopes"] == ["webhooks:read"]
    assert await status_of(api, leads, issued["key"]) == 403
    await admin.call("PATCH", f"/keys/{issued['id']}", 200, json={"scopes": ["leads:read"]})
    assert await status_of(api, leads, issued["key"]) == 200
    revoked = await admin.call("DELETE", f"/keys/{issued['id']}", 200)
    assert revoked["revoked"] is True and revoked["revokedAt"] is not None
    assert await status_of(api, leads, issued["key"]) == 401
    # A revoked key cannot be changed, rolled or revoked into anything else.
    await admin.call("PATCH", f"/keys/{issued['id']}", 404, json={"name": "x"})
    await admin.call("POST", f"/keys/{issued['id']}/roll", 404, json={})
    assert (await admin.call("DELETE", f"/keys/{issued['id']}", 200))["revoked"] is True


async def test_a_revoked_key_reaches_a_second_server_within_the_key_cache_time(
    settings: Settings, api: TestClient, admin: Admin
) -> None:
    """Two servers, each with its own caches (as two `serve` processes have): the one
    that revokes refuses at once, the other within auth.key_cache_seconds (1 s here)."""
    _ws, bot, issued = await admin.tenant()
    leads = f"/api/v1/chatbots/{bot}/leads"
    async with serving(settings) as second:
        assert await status_of(second, leads, issued["key"]) == 200  # cached there
        await admin.call("DELETE", f"/keys/{issued['id']}", 200)
        assert await status_of(api, leads, issued["key"]) == 401
        revoked_at = time.monotonic()
        while await status_of(second, leads, issued["key"]) == 200:
            assert time.monotonic() - revoked_at < settings.key_cache_seconds + 1.0
            await asyncio.sleep(0.1)
        assert await status_of(second, leads, issued["key"]) == 401


async def test_a_rolled_key_keeps_its_old_secret_exactly_as_long_as_asked(
    api: TestClient, admin: Admin
) -> None:
    _ws, bot, issued = await admin.tenant(name="rolling", scopes=["leads:read"])
    leads = f"/api/v1/chatbots/{bot}/leads"
    old = issued["key"]
    assert await status_of(api, leads, old) == 200
    rolled = await admin.call(
        "POST", f"/keys/{issued['id']}/roll", 200, json={"expireOldInSeconds": 2}
    )
    new = rolled["key"]
    assert rolled["id"] == issued["id"] and new != old and rolled["scopes"] == ["leads:read"]
    assert await status_of(api, leads, new) == 200
    assert await status_of(api, leads, old) == 200
    until = rolled["oldKeyExpiresAt"]
    assert until is not None
    # Refused from the second it gives, not before.
    while format_ts(utcnow() + timedelta(milliseconds=300)) < until:
        assert await status_of(api, leads, old) == 200
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.6)
    assert await status_of(api, leads, old) == 401
    assert await status_of(api, leads, new) == 200
    # Rolled with no overlap (no body at all): the current secret stops at once.
    again = await admin.call("POST", f"/keys/{issued['id']}/roll", 200)
    assert again["oldKeyExpiresAt"] is None
    assert await status_of(api, leads, new) == 401
    assert await status_of(api, leads, again["key"]) == 200
    # A revoked key's previous secret, still in its overlap, is refused with it.
    last = await admin.call(
        "POST", f"/keys/{issued['id']}/roll", 200, json={"expireOldInSeconds": 600}
    )
    assert await status_of(api, leads, again["key"]) == 200
    await admin.call("DELETE", f"/keys/{issued['id']}", 200)
    assert await status_of(api, leads, again["key"]) == 401
    assert await status_of(api, leads, last["key"]) == 401


async def test_a_key_expires_to_the_second(api: TestClient, admin: Admin) -> None:
    expires = utcnow() + timedelta(seconds=2)
    _ws, bot, issued = await admin.tenant(expiresAt=format_ts(expires))
    leads = f"/api/v1/chatbots/{bot}/leads"
    assert issued["expiresAt"] == format_ts(expires)
    assert await status_of(api, leads, issued["key"]) == 200
    while utcnow() < expires - timedelta(milliseconds=300):
        await asyncio.sleep(0.1)
    assert await status_of(api, leads, issued["key"]) == 200
    while utcnow() < expires:
        await asyncio.sleep(0.05)
    assert await status_of(api, leads, issued["key"]) == 401


async def test_a_key_bound_to_a_chatbot_sees_no_other(api: TestClient, admin: Admin) -> None:
    ws, bot, _ = await admin.tenant()
    other = await admin.call("POST", f"/workspaces/{ws}/chatbots", 201, json={"name": "Two"})
    bound = await admin.call("POST", f"/workspaces/{ws}/keys", 201, json={"chatbotIds": [bot]})
    assert await status_of(api, f"/api/v1/chatbots/{bot}/leads", bound["key"]) == 200
    assert await status_of(api, f"/api/v1/chatbots/{other['id']}/leads", bound["key"]) == 404
    assert await status_of(api, "/api/v1/webhooks", bound["key"]) == 403
    # Unbound again (null): every chatbot.
    await admin.call("PATCH", f"/keys/{bound['id']}", 200, json={"chatbotIds": None})
    assert await status_of(api, f"/api/v1/chatbots/{other['id']}/leads", bound["key"]) == 200


# --- hostile input ----------------------------------------------------------------------------

BAD_BODIES = [
    ("POST", "/workspaces", {}),
    ("POST", "/workspaces", {"name": ""}),
    ("POST", "/workspaces", {"name": "   "}),
    ("POST", "/workspaces", {"name": "x" * 201}),
    ("POST", "/workspaces", {"name": "a\u0000b"}),
    ("POST", "/workspaces", {"name": 5}),
    ("POST", "/workspaces", {"name": "ok", "id": "ws_0000000000000000"}),
    ("POST", "/workspaces/{ws}/chatbots", {"name": "b", "defaultRegion": "XX"}),
    ("POST", "/workspaces/{ws}/chatbots", {"name": "b", "defaultRegion": "us"}),
    ("POST", "/workspaces/{ws}/keys", {"scopes": ["leads:admin"]}),
    ("POST", "/workspaces/{ws}/keys", {"scopes": []}),
    ("POST", "/workspaces/{ws}/keys", {"scopes": ["leads:read", "leads:read"]}),
    ("POST", "/workspaces/{ws}/keys", {"chatbotIds": ["cb_0000000000000000"]}),
    ("POST", "/workspaces/{ws}/keys", {"chatbotIds": "cb_0000000000000000"}),
    ("POST", "/workspaces/{ws}/keys", {"expiresAt": "2001-01-01T00:00:00Z"}),
    ("POST", "/workspaces/{ws}/keys", {"expiresAt": "tomorrow"}),
    ("POST", "/workspaces/{ws}/keys", {"rateLimit": {"capacity": 0, "refillPerSecond": 1}}),
    ("POST", "/workspaces/{ws}/keys", {"rateLimit": {"capacity": 1.5, "refillPerSecond": 1}}),
    ("POST", "/workspaces/{ws}/keys", {"key": "sk-workspace_" + "a" * 43}),
    ("PATCH", "/keys/{key}", {}),
    ("PATCH", "/keys/{key}", {"scopes": None}),
    ("PATCH", "/chatbots/{bot}", {}),
    ("PATCH", "/chatbots/{bot}", {"workspaceId": "ws_0000000000000000"}),
    ("POST", "/keys/{key}/roll", {"expireOldInSeconds": 604801}),
    ("POST", "/keys/{key}/roll", {"expireOldInSeconds": -1}),
    ("POST", "/keys/{key}/roll", {"expireOldInSeconds": "60"}),
]


@pytest.mark.parametrize(("method", "path", "body"), BAD_BODIES)
async def test_bad_input_is_a_400_in_the_envelope_and_changes_nothing(
    api: TestClient, admin: Admin, mongo: Mongo, method: str, path: str, body: Any
) -> None:
    ws, bot, issued = await admin.tenant()
    _other_ws, other_bot, _ = await admin.tenant()
    if "chatbotIds" in body and isinstance(body["chatbotIds"], list):
        body = {"chatbotIds": [other_bot]}  # another workspace's chatbot
    before = await _everything(mongo)
    url = path.format(ws=ws, bot=bot, key=issued["id"])
    error = await admin.call(method, url, 400, json=body)
    assert error["code"] == "VALIDATION_ERROR" and error["requestId"]
    assert await _everything(mongo) == before
    # The key still works as it did.
    assert await status_of(api, f"/api/v1/chatbots/{bot}/leads", issued["key"]) == 200


async def _everything(mongo: Mongo) -> dict[str, list[Any]]:
    """Every document but the audit's reads (lastUsedAt moves on its own)."""
    out = {}
    for name in ("workspaces", "chatbots", "api_keys", "admin_keys", "deletion_jobs"):
        docs = await mongo.db[name].find({}).sort("_id", 1).to_list(None)
        out[name] = [{k: v for k, v in d.items() if k != "lastUsedAt"} for d in docs]
    return out


@pytest.mark.parametrize(
    "path",
    [
        "/workspaces/ws_0000000000000000",
        "/workspaces/nope",
        "/workspaces/ws_0000000000000000/chatbots",
        "/workspaces/ws_0000000000000000/keys",
        "/chatbots/cb_0000000000000000",
        "/chatbots/cb_00",
    ],
)
async def test_what_does_not_exist_is_a_404(admin: Admin, path: str) -> None:
    error = await admin.call("GET", path, 404)
    assert error["code"].endswith("NOT_FOUND")


async def test_deletions_need_confirmation(admin: Admin, api: TestClient) -> None:
    ws, bot, issued = await admin.tenant()
    for path in (f"/workspaces/{ws}", f"/chatbots/{bot}"):
        error = await admin.call("DELETE", path, 400)
        assert error["code"] == "CONFIRMATION_REQUIRED"
        await admin.call("DELETE", path + "?confirm=false", 400)
    assert await status_of(api, f"/api/v1/chatbots/{bot}/leads", issued["key"]) == 200
    assert (await admin.call("GET", f"/workspaces/{ws}", 200))["status"] == "active"


# --- deletion ---------------------------------------------------------------------------------


async def _gone(admin: Admin, path: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        response = await admin.api.get(A + path, headers=admin.headers)
        await response.read()
        if response.status == 404:
            return
        assert response.status == 200
        await asyncio.sleep(0.2)
    raise AssertionError(f"{path} still there after {seconds} s")


async def test_a_deleted_workspace_leaves_nothing_behind_and_no_other_workspace_is_touched(
    api: TestClient, admin: Admin, mongo: Mongo
) -> None:
    ws, bot, issued = await admin.tenant()
    _keep_ws, keep_bot, keep_key = await admin.tenant()
    second_bot = await admin.call("POST", f"/workspaces/{ws}/chatbots", 201, json={"name": "Two"})
    bodies = [person() for _ in range(3)]
    lead_ids = []
    for chatbot, body in zip((bot, bot, second_bot["id"]), bodies, strict=True):
        response = await api.post(
            f"/api/v1/chatbots/{chatbot}/leads",
            headers={**bearer(issued["key"]), "Idempotency-Key": f"k-{body['name']}"},
            json=body,
        )
        assert response.status == 201
        lead_ids.append((await response.json())["data"]["id"])
    hook = await api.post(
        "/api/v1/webhooks",
        headers=bearer(issued["key"]),
        json={"url": "https://example.com/hook"},
    )
    assert hook.status == 201
    kept = person()
    response = await api.post(
        f"/api/v1/chatbots/{keep_bot}/leads", headers=bearer(keep_key["key"]), json=kept
    )
    assert response.status == 201

    deleting = await admin.call("DELETE", f"/workspaces/{ws}?confirm=true", 202)
    assert deleting["status"] == "deleting" and deleting["deletion"]["state"] == "running"
    assert await status_of(api, f"/api/v1/chatbots/{bot}/leads", issued["key"]) == 401
    again = await admin.call("DELETE", f"/workspaces/{ws}?confirm=true", 202)
    assert again["deletion"]["requestedAt"] == deleting["deletion"]["requestedAt"]
    await _gone(admin, f"/workspaces/{ws}")
    await admin.call("GET", f"/chatbots/{bot}", 404)

    personal = [v for body in bodies for v in values_of(body)]
    ids = [ws, bot, second_bot["id"], issued["id"], *lead_ids]
    found = await copies_in_store(mongo.db, [*personal, *ids])
    # Only the admin audit names it (ids, never personal data) and the finished job.
    assert {c.collection for c in found} <= {"audit_log", "deletion_jobs"}, found
    assert not [c for c in found if c.value in personal], found
    assert all(
        c.doc.get("action", "").startswith("workspace.")
        or c.collection == "deletion_jobs"
        or c.doc.get("action", "").startswith(("chatbot.", "key."))
        for c in found
    ), found
    # The other workspace is whole.
    assert await status_of(api, f"/api/v1/chatbots/{keep_bot}/leads", keep_key["key"]) == 200
    assert len(await copies_in_store(mongo.db, values_of(kept)[:2])) > 0
    done = await admin.call("GET", "/audit", 200, params={"limit": "1000"})
    finished = [
        e for e in done["entries"] if e["action"] == "workspace.deleted" and e["target"]["id"] == ws
    ]
    assert finished and finished[0]["details"]["removed"]["leads"] == 3


async def test_a_deleted_chatbot_answers_404_at_once_and_its_leads_go(
    api: TestClient, admin: Admin, mongo: Mongo
) -> None:
    ws, bot, issued = await admin.tenant()
    second = await admin.call("POST", f"/workspaces/{ws}/chatbots", 201, json={"name": "Two"})
    leads, other = f"/api/v1/chatbots/{bot}/leads", f"/api/v1/chatbots/{second['id']}/leads"
    body, kept = person(), person()
    assert (await api.post(leads, headers=bearer(issued["key"]), json=body)).status == 201
    assert (await api.post(other, headers=bearer(issued["key"]), json=kept)).status == 201
    shown = await admin.call("DELETE", f"/chatbots/{bot}?confirm=true", 202)
    assert shown["status"] == "deleting"
    assert await status_of(api, leads, issued["key"]) == 404
    await admin.call("PATCH", f"/chatbots/{bot}", 404, json={"name": "back"})
    await _gone(admin, f"/chatbots/{bot}")
    assert await copies_in_store(mongo.db, values_of(body)) == []
    assert await status_of(api, other, issued["key"]) == 200
    assert await copies_in_store(mongo.db, values_of(kept)[:1])
    ws_shown = await admin.call("GET", f"/workspaces/{ws}", 200)
    assert ws_shown["counts"]["chatbots"] == 1 and ws_shown["counts"]["leads"] == 1


# --- the audit ---------------------------------------------------------------------------------


async def test_the_audit_names_actor_action_target_and_request_and_never_a_secret(
    api: TestClient, admin: Admin, admin_key: str, accounts: AccountRepository, mongo: Mongo
) -> None:
    first = await admin.call("GET", "/audit", 200, params={"limit": "1000"})
    start = first["entries"][-1]["id"] if first["entries"] else None
    ws, bot, issued = await admin.tenant()
    rolled = await admin.call(
        "POST", f"/keys/{issued['id']}/roll", 200, json={"expireOldInSeconds": 60}
    )
    lead = await api.post(
        f"/api/v1/chatbots/{bot}/leads",
        headers=bearer(rolled["key"]),
        json={"name": "A", "email": "a@example.com"},
    )
    lead_id = (await lead.json())["data"]["id"]
    deleted = await api.delete(
        f"/api/v1/chatbots/{bot}/leads/{lead_id}?confirm=true", headers=bearer(rolled["key"])
    )
    assert deleted.status == 200
    entries: list[dict[str, Any]] = []
    after = start
    while True:
        params = {"limit": "2", **({"after": after} if after else {})}
        page = await admin.call("GET", "/audit", 200, params=params)
        entries += page["entries"]
        if not page["pagination"]["hasMore"]:
            break
        after = page["pagination"]["nextAfter"]
    actions = [e["action"] for e in entries]
    assert actions == [
        "workspace.create",
        "chatbot.create",
        "key.create",
        "key.roll",
        "lead.delete",
    ]
    admin_id = (await admin_key_record(accounts, admin_key)).id
    assert all(e["actor"] == {"type": "adminKey", "id": admin_id} for e in entries[:4])
    assert entries[4]["actor"] == {"type": "apiKey", "id": issued["id"]}
    assert entries[4]["target"] == {
        "type": "lead",
        "id": lead_id,
        "chatbotId": bot,
        "workspaceId": ws,
    }
    assert all(e["requestId"] for e in entries)
    assert [e["at"] for e in entries] == sorted(e["at"] for e in entries)
    secrets_ = [issued["key"], rolled["key"], admin_key]
    digests = [secret_digest(s) for s in secrets_]
    assert await copies_in_store_of(mongo, "audit_log", [*secrets_, *digests]) == []
    error = await admin.call("GET", "/audit", 404, params={"after": "aud_0000000000000000"})
    assert error["code"] == "AUDIT_RECORD_NOT_FOUND"


async def admin_key_record(accounts: AccountRepository, secret: str) -> Any:
    return await accounts.admin_key_by_digest(digest=secret_digest(secret))


async def copies_in_store_of(mongo: Mongo, collection: str, values: list[str]) -> list[Any]:
    return [c for c in await copies_in_store(mongo.db, values) if c.collection == collection]


async def test_every_admin_route_refuses_a_workspace_key_of_every_scope_and_changes_nothing(
    api: TestClient, admin: Admin, mongo: Mongo
) -> None:
    ws, bot, issued = await admin.tenant()  # every scope
    spec = await (await api.get("/api/docs/openapi.json")).json()
    admin_ops = [
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if op["x-required-scopes"] == ["admin"]
    ]
    assert len(admin_ops) == 15
    for method, path in admin_ops:
        assert spec["paths"][path][method.lower()]["security"] == [{"adminAuth": []}]
        url = path.format(workspaceId=ws, chatbotId=bot, keyId=issued["id"]) + "?confirm=true"
        before = await _everything(mongo)
        response = await api.request(method, url, headers=bearer(issued["key"]), json={"name": "x"})
        assert response.status == 401, (method, path)
        assert (await response.json())["error"]["code"] == "UNAUTHORIZED"
        assert await _everything(mongo) == before
