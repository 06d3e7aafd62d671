"""Key scopes, chatbot restriction and expiry (contract v1.2, "API keys: scopes, chatbots,
expiry"): every route declares the scope it needs, in one place (its ``@Operation``), and
one middleware enforces it; a key without it gets 403 INSUFFICIENT_SCOPE and changes
nothing, a chatbot outside a key's list is a 404, an expired key a 401."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest

from pollybot_leads.app import create_app
from pollybot_leads.http.context import ADMIN_PREFIX, ADMIN_SCOPE, PROTECTED_PREFIX, SCOPES
from pollybot_leads.http.spec import required_scope
from pollybot_leads.timeutil import utcnow
from tests.conftest import Tenant, make_tenant
from tests.store_scan import person

from .helpers import data_of, error_of

# operationId -> (method, path under the tenant's chatbot or the API, body): one request
# each route answers when the key may make it (any 2xx).
Request = tuple[str, str, Any]


def requests_of(
    t: Tenant, lead_id: str, webhook_id: str, suppression_id: str, source_id: str
) -> dict[str, Request]:
    chatbot = f"/api/v1/chatbots/{t.chatbot_id}"
    hook = f"/api/v1/webhooks/{webhook_id}"
    return {
        "createLead": ("POST", f"{chatbot}/leads", person()),
        "createLeadsBatch": ("POST", f"{chatbot}/leads/batch", {"leads": [person()]}),
        "listLeads": ("GET", f"{chatbot}/leads", None),
        "getLead": ("GET", f"{chatbot}/leads/{lead_id}", None),
        "updateLead": ("PUT", f"{chatbot}/leads/{lead_id}", {"status": "contacted"}),
        "listLeadDuplicates": ("GET", f"{chatbot}/leads/{lead_id}/duplicates", None),
        "mergeLeads": (
            "POST",
            f"{chatbot}/leads/{lead_id}/merge",
            {"sourceIds": [source_id], "dryRun": True},
        ),
        "deleteLead": ("DELETE", f"{chatbot}/leads/{lead_id}?confirm=true", None),
        "exportLeads": ("GET", f"{chatbot}/leads/export", None),
        "listEvents": ("GET", f"{chatbot}/events", None),
        "createWebhook": ("POST", "/api/v1/webhooks", {"url": "http://127.0.0.1:9/hook"}),
        "listWebhooks": ("GET", "/api/v1/webhooks", None),
        "getWebhook": ("GET", hook, None),
        "updateWebhook": ("PUT", hook, {"description": "changed"}),
        "rotateWebhookSecret": ("POST", f"{hook}/rotate-secret", {}),
        "listWebhookDeliveries": ("GET", f"{hook}/deliveries", None),
        "replayWebhook": ("POST", f"{hook}/replay", {"after": 0}),
        "deleteWebhook": ("DELETE", f"{hook}?confirm=true", None),
        "createErasure": (
            "POST",
            "/api/v1/privacy/erasures",
            {"email": person()["email"], "suppress": True, "confirm": True},
        ),
        "listSuppressions": ("GET", "/api/v1/privacy/suppressions", None),
        "deleteSuppression": ("DELETE", f"/api/v1/privacy/suppressions/{suppression_id}", None),
    }


async def send(api, key: str, request: Request) -> Any:
    method, path, body = request
    headers = {"Authorization": f"Bearer {key}"}
    return await api.request(method, path, json=body, headers=headers)


def test_every_api_route_declares_a_known_scope(settings):
    app = create_app(settings)
    routes = [
        r
        for r in app.router.routes()
        if r.resource is not None
        and r.resource.canonical.startswith(PROTECTED_PREFIX)
        and r.method != "*"  # answers 405 only
    ]
    assert len(routes) >= 19
    undeclared = [
        f"{r.method} {r.resource.canonical}" for r in routes if required_scope(r.handler) is None
    ]
    assert undeclared == []
    assert {required_scope(r.handler) for r in routes} == {*SCOPES, ADMIN_SCOPE}
    # The admin API's routes, and only they, need an admin key (tests/api/test_admin.py).
    admin = {r for r in routes if required_scope(r.handler) == ADMIN_SCOPE}
    assert admin == {r for r in routes if r.resource.canonical.startswith(ADMIN_PREFIX)}


async def counts(mongo) -> dict[str, int]:
    names = sorted(await mongo.db.list_collection_names())
    return {name: await mongo.db[name].count_documents({}) for name in names}


async def test_each_route_needs_its_scope_and_a_key_without_it_changes_nothing(
    api, mongo, accounts, spec_operations
):
    full = await make_tenant(accounts)
    lead = await data_of(await api.post(full.leads_url, json=person(), headers=full.headers), 201)
    source = await data_of(await api.post(full.leads_url, json=person(), headers=full.headers), 201)
    hook = {"url": "http://127.0.0.1:9/hook"}
    resp = await api.post("/api/v1/webhooks", json=hook, headers=full.headers)
    webhook = await data_of(resp, 201)
    erasure = {"email": person()["email"], "suppress": True, "confirm": True}
    await data_of(await api.post("/api/v1/privacy/erasures", json=erasure, headers=full.headers))
    page = await data_of(await api.get("/api/v1/privacy/suppressions", headers=full.headers))
    suppression = page["suppressions"][0]["id"]
    table = requests_of(full, lead["id"], webhook["id"], suppression, source["id"])
    assert set(table) == set(spec_operations), "a route without a case here"

    for operation, request in table.items():
        needed = spec_operations[operation]
        others = [scope for scope in SCOPES if scope != needed]
        lacking = await accounts.create_key(workspace_id=full.workspace_id, scopes=others)
        before = await counts(mongo)
        resp = await send(api, lacking.secret, request)
        error = await error_of(resp, 403, "INSUFFICIENT_SCOPE")
        assert error["details"] == {"required": [needed]}, operation
        assert await counts(mongo) == before, operation

    for operation, request in table.items():  # in order: the deletions come last
        only = await accounts.create_key(
            workspace_id=full.workspace_id, scopes=[spec_operations[operation]]
        )
        resp = await send(api, only.secret, request)
        assert 200 <= resp.status < 300, (operation, await resp.text())


@pytest.fixture
async def spec_operations(api) -> dict[str, str]:
    """operationId -> the scope the served document says it needs."""
    spec = await data_of_json(await api.get("/api/docs/openapi.json"))
    found = {}
    for item in spec["paths"].values():
        for op in item.values():
            (scope,) = op["x-required-scopes"]
            if scope == ADMIN_SCOPE:  # an admin key's: tests/api/test_admin.py
                continue
            assert f"`{scope}`" in op["description"]
            found[op["operationId"]] = scope
    return found


async def data_of_json(resp) -> Any:
    assert resp.status == 200
    return await resp.json()


async def test_a_key_limited_to_chatbots_sees_only_those(api, accounts):
    tenant = await make_tenant(accounts)
    second = await accounts.create_chatbot(workspace_id=tenant.workspace_id, name="Second")
    mine = await accounts.create_key(
        workspace_id=tenant.workspace_id, chatbot_ids=[tenant.chatbot_id]
    )
    headers = {"Authorization": f"Bearer {mine.secret}"}
    lead = await data_of(await api.post(tenant.leads_url, json=person(), headers=headers), 201)
    other_url = f"/api/v1/chatbots/{second['id']}/leads"
    resp = await api.post(other_url, json=person(), headers=headers)
    await error_of(resp, 404, "CHATBOT_NOT_FOUND")
    resp = await api.get(other_url, headers=headers)
    await error_of(resp, 404, "CHATBOT_NOT_FOUND")
    listing = await data_of(await api.get(other_url, headers=tenant.headers))
    assert listing["leads"] == []  # nothing was written there
    # Workspace-wide routes would reach the other chatbots: refused.
    for method, path, body in (
        ("GET", "/api/v1/webhooks", None),
        ("POST", "/api/v1/webhooks", {"url": "http://127.0.0.1:9/x"}),
        ("POST", "/api/v1/privacy/erasures", {"email": "x@example.com", "confirm": True}),
    ):
        resp = await api.request(method, path, json=body, headers=headers)
        error = await error_of(resp, 403, "INSUFFICIENT_SCOPE")
        assert "limited to chatbots" in error["message"]
    resp = await api.get(tenant.lead_url(lead["id"]), headers=headers)
    assert (await data_of(resp))["id"] == lead["id"]


async def test_a_key_cannot_be_limited_to_another_workspaces_chatbot(accounts, other_tenant):
    tenant = await make_tenant(accounts)
    with pytest.raises(Exception, match="No chatbot"):
        await accounts.create_key(
            workspace_id=tenant.workspace_id, chatbot_ids=[other_tenant.chatbot_id]
        )
    with pytest.raises(Exception, match="Unknown scopes"):
        await accounts.create_key(workspace_id=tenant.workspace_id, scopes=["leads:admin"])


async def test_an_expired_key_is_refused_at_its_second_even_when_cached(api, accounts):
    tenant = await make_tenant(accounts)
    expiring = await accounts.create_key(
        workspace_id=tenant.workspace_id, expires_at=utcnow() + timedelta(seconds=1.5)
    )
    headers = {"Authorization": f"Bearer {expiring.secret}"}
    await data_of(await api.get(tenant.leads_url, headers=headers))  # cached now
    await asyncio.sleep(1.6)
    resp = await api.get(tenant.leads_url, headers=headers)
    await error_of(resp, 401, "UNAUTHORIZED")
    resp = await api.post(
        tenant.leads_url, json=person(), headers={**headers, "Idempotency-Key": str(uuid.uuid4())}
    )
    await error_of(resp, 401, "UNAUTHORIZED")
    past = await accounts.create_key(
        workspace_id=tenant.workspace_id, expires_at=utcnow() - timedelta(seconds=1)
    )
    resp = await api.get(tenant.leads_url, headers={"Authorization": f"Bearer {past.secret}"})
    await error_of(resp, 401, "UNAUTHORIZED")
