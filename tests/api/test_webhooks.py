"""The webhook endpoints API: workspace-scoped, secrets shown once, URLs checked."""

from __future__ import annotations

import re

import pytest
from aiohttp.test_utils import TestClient, TestServer

from pollybot_leads.app import create_app
from tests.dns import EMBEDDING_FORMS, resolve_names

from .helpers import TS, data_of, error_of

BASE = "/api/v1/webhooks"
URL = "https://example.com/hooks/pollybot"


async def create(api, tenant, **fields) -> dict:
    resp = await api.post(BASE, json={"url": URL, **fields}, headers=tenant.headers)
    return await data_of(resp, 201)


async def test_create_shows_the_secret_once(api, tenant):
    resp = await api.post(BASE, json={"url": URL, "description": "CRM"}, headers=tenant.headers)
    made = await data_of(resp, 201)
    assert re.fullmatch(r"wh_[0-9a-f]{16}", made["id"])
    assert resp.headers["Location"] == f"{BASE}/{made['id']}"
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{43}=", made["secret"])
    assert made["events"] == ["lead.created", "lead.updated", "lead.deleted", "lead.merged"]
    assert made["chatbotIds"] == [] and made["enabled"] is True
    assert made["description"] == "CRM" and made["workspaceId"] == tenant.workspace_id
    assert TS.match(made["createdAt"]) and made["previousSecretExpiresAt"] is None
    shown = await data_of(await api.get(f"{BASE}/{made['id']}", headers=tenant.headers))
    assert "secret" not in shown
    assert shown == {k: v for k, v in made.items() if k != "secret"}
    listed = await data_of(await api.get(BASE, headers=tenant.headers))
    assert [w["id"] for w in listed["webhooks"]] == [made["id"]]
    assert "secret" not in listed["webhooks"][0]


async def test_endpoints_belong_to_one_workspace(api, tenant, other_tenant):
    made = await create(api, tenant)
    url = f"{BASE}/{made['id']}"
    for method, kw in (
        ("GET", {}),
        ("PUT", {"json": {"enabled": False}}),
        ("DELETE", {"params": {"confirm": "true"}}),
        ("POST", {}),
    ):
        path = url + "/rotate-secret" if method == "POST" else url
        resp = await api.request(method, path, headers=other_tenant.headers, **kw)
        await error_of(resp, 404, "WEBHOOK_NOT_FOUND")
    assert (await data_of(await api.get(BASE, headers=other_tenant.headers)))["webhooks"] == []
    await error_of(await api.get(BASE), 401, "UNAUTHORIZED")
    await error_of(
        await api.get(f"{BASE}/wh_nothex", headers=tenant.headers), 404, "WEBHOOK_NOT_FOUND"
    )
    # Another workspace's chatbot cannot be subscribed to.
    resp = await api.post(
        BASE, json={"url": URL, "chatbotIds": [other_tenant.chatbot_id]}, headers=tenant.headers
    )
    error = await error_of(resp, 400, "VALIDATION_ERROR")
    assert "chatbotIds" in error["details"]


async def test_update_changes_only_what_is_sent(api, tenant):
    made = await create(api, tenant)
    url = f"{BASE}/{made['id']}"
    resp = await api.put(
        url,
        json={"events": ["lead.deleted"], "chatbotIds": [tenant.chatbot_id], "enabled": False},
        headers=tenant.headers,
    )
    changed = await data_of(resp)
    assert changed["events"] == ["lead.deleted"] and changed["chatbotIds"] == [tenant.chatbot_id]
    assert changed["enabled"] is False and changed["url"] == URL
    await error_of(await api.put(url, json={}, headers=tenant.headers), 400, "VALIDATION_ERROR")
    for bad in (
        {"events": []},
        {"events": ["lead.created", "lead.created"]},
        {"events": ["LEAD_CREATED"]},
        {"url": "ftp://example.com"},
        {"url": "https://user:pw@example.com/"},
        {"url": "https://example.com/#frag"},
        {"secret": "whsec_x"},
        {"description": "x" * 501},
    ):
        resp = await api.put(url, json=bad, headers=tenant.headers)
        await error_of(resp, 400, "VALIDATION_ERROR")
    assert (await data_of(await api.get(url, headers=tenant.headers))) == changed


async def test_delete_is_confirmed(api, tenant):
    made = await create(api, tenant)
    url = f"{BASE}/{made['id']}"
    await error_of(await api.delete(url, headers=tenant.headers), 400, "CONFIRMATION_REQUIRED")
    resp = await api.delete(url, headers={**tenant.headers, "X-Confirm-Delete": "true"})
    body = await resp.json()
    assert resp.status == 200 and body["message"] == "Webhook deleted successfully"
    assert body["data"]["id"] == made["id"]
    await error_of(await api.get(url, headers=tenant.headers), 404, "WEBHOOK_NOT_FOUND")


async def test_rotation_keeps_the_old_secret_for_a_day(api, tenant):
    made = await create(api, tenant)
    resp = await api.post(f"{BASE}/{made['id']}/rotate-secret", headers=tenant.headers)
    rotated = await data_of(resp)
    assert rotated["secret"] != made["secret"] and rotated["secret"].startswith("whsec_")
    assert TS.match(rotated["previousSecretExpiresAt"])


async def test_replay_and_log_validate_their_input(api, tenant):
    made = await create(api, tenant)
    url = f"{BASE}/{made['id']}"
    for body in ({}, {"after": -1}, {"after": "1"}, {"after": 1, "x": 1}):
        resp = await api.post(url + "/replay", json=body, headers=tenant.headers)
        await error_of(resp, 400, "VALIDATION_ERROR")
    for params in (
        {"limit": "0"},
        {"before": "nope"},
        {"x": "1"},
        [("limit", "1"), ("limit", "2")],
    ):
        resp = await api.get(url + "/deliveries", params=params, headers=tenant.headers)
        await error_of(resp, 400, "VALIDATION_ERROR")
    page = await data_of(await api.get(url + "/deliveries", headers=tenant.headers))
    assert page == {
        "deliveries": [],
        "pagination": {"limit": 50, "hasMore": False, "nextBefore": None},
    }


@pytest.fixture(scope="module")
async def strict_api(settings, mongo):
    """A server with the production rules: https only, no private targets."""
    strict = settings.replace(webhook_allow_http=False, webhook_allow_private=False)
    client = TestClient(TestServer(create_app(strict)))
    await client.start_server()
    yield client
    await client.close()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://example.com/hook", "https://"),
        ("https://127.0.0.1/hook", "loopback"),
        ("https://localhost:8443/hook", "loopback"),
        ("https://10.1.2.3/hook", "private"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://192.168.0.10/hook", "private"),
    ],
)
async def test_private_and_plain_http_targets_are_refused(strict_api, tenant, url, says):
    resp = await strict_api.post(BASE, json={"url": url}, headers=tenant.headers)
    error = await error_of(resp, 400, "VALIDATION_ERROR")
    assert says in error["details"]["url"][0]


@pytest.mark.parametrize(("host", "address", "inner"), EMBEDDING_FORMS)
async def test_ipv6_addresses_carrying_a_refused_ipv4_are_refused(
    strict_api, tenant, monkeypatch, host, address, inner
):
    """6to4, NAT64, Teredo, IPv4-mapped, -compatible and -translated addresses reach the
    IPv4 address they carry: refused as that address is, and nothing is made."""
    resolve_names(monkeypatch, {host: address})
    resp = await strict_api.post(BASE, json={"url": f"https://{host}/hook"}, headers=tenant.headers)
    error = await error_of(resp, 400, "VALIDATION_ERROR")
    (message,) = error["details"]["url"]
    assert f"{host} resolves to a refused address" in message
    assert f"of {inner}, a " in message
    listed = await data_of(await strict_api.get(BASE, headers=tenant.headers))
    assert listed["webhooks"] == []


async def test_nat64_local_use_addresses_are_refused(strict_api, tenant, monkeypatch):
    """64:ff9b:1::/48 places its IPv4 address where its network chose: never public."""
    resolve_names(monkeypatch, {"nat64-local.test": "64:ff9b:1:5db8:d70e::"})
    resp = await strict_api.post(
        BASE, json={"url": "https://nat64-local.test/hook"}, headers=tenant.headers
    )
    error = await error_of(resp, 400, "VALIDATION_ERROR")
    assert "is a local-use NAT64 address" in error["details"]["url"][0]


async def test_ipv6_addresses_carrying_a_public_ipv4_are_accepted(strict_api, tenant, monkeypatch):
    """6to4 and NAT64 addresses around a public IPv4 address are public themselves."""
    resolve_names(
        monkeypatch, {"sixtofour.test": "2002:5db8:d70e::1", "nat64.test": "64:ff9b::5db8:d70e"}
    )
    for host in ("sixtofour.test", "nat64.test"):
        resp = await strict_api.post(
            BASE, json={"url": f"https://{host}/hook"}, headers=tenant.headers
        )
        await data_of(resp, 201)


async def test_a_public_https_target_is_accepted_by_the_strict_server(strict_api, tenant):
    resp = await strict_api.post(
        BASE, json={"url": "https://93.184.215.14/hook"}, headers=tenant.headers
    )
    await data_of(resp, 201)


async def test_a_create_retried_with_its_idempotency_key_makes_one_endpoint(
    api, tenant, other_tenant
):
    """The document says webhook writes take Idempotency-Key; a retry is replayed, and
    the key is the caller's own (another workspace's same key makes its own endpoint)."""
    headers = {**tenant.headers, "Idempotency-Key": "create-hook-1"}
    first = await api.post(BASE, json={"url": URL}, headers=headers)
    made = await data_of(first, 201)
    again = await api.post(BASE, json={"url": URL}, headers=headers)
    assert await data_of(again, 201) == made
    assert again.headers["Idempotent-Replayed"] == "true"
    listed = await data_of(await api.get(BASE, headers=tenant.headers))
    assert [w["id"] for w in listed["webhooks"]] == [made["id"]]
    other = {**other_tenant.headers, "Idempotency-Key": "create-hook-1"}
    theirs = await data_of(await api.post(BASE, json={"url": URL}, headers=other), 201)
    assert theirs["id"] != made["id"] and theirs["workspaceId"] == other_tenant.workspace_id
    reused = await api.post(BASE, json={"url": URL, "description": "x"}, headers=headers)
    await error_of(reused, 422, "IDEMPOTENCY_KEY_REUSED")
