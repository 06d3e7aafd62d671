import asyncio

import pytest

from .helpers import create_lead, data_of, error_of


async def test_request_without_key_is_401_with_challenge(api, tenant):
    resp = await api.get(tenant.leads_url)
    await error_of(resp, 401, "UNAUTHORIZED")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer sk-workspace_short",
        "Bearer sk-other_" + "a" * 43,
        "Bearer sk-workspace_" + "a" * 43,  # well-formed, unknown
        "bearer sk-workspace_" + "!" * 43,
        "sk-workspace_" + "a" * 43,
        "Bearer sk-workspace_" + "a" * 5000,
    ],
)
async def test_bad_keys_all_look_the_same(api, tenant, header):
    resp = await api.get(tenant.leads_url, headers={"Authorization": header})
    error = await error_of(resp, 401, "UNAUTHORIZED")
    assert error["message"] == "Invalid or missing API key"
    assert "details" not in error


async def test_revoked_key_stops_working_within_the_cache_time(api, accounts, tenant, settings):
    assert (await api.get(tenant.leads_url, headers=tenant.headers)).status == 200
    await accounts.revoke_key(key_id=tenant.key_id)
    await asyncio.sleep(settings.key_cache_seconds + 0.1)
    await error_of(await api.get(tenant.leads_url, headers=tenant.headers), 401, "UNAUTHORIZED")


async def test_secret_is_stored_only_as_a_digest(mongo, tenant):
    doc = await mongo.db["api_keys"].find_one({"_id": tenant.key_id})
    assert tenant.key not in repr(doc)
    assert len(doc["digest"]) == 64


async def test_unknown_and_foreign_chatbots_are_the_same_404(api, tenant, other_tenant):
    foreign = await api.get(other_tenant.leads_url, headers=tenant.headers)
    missing = await api.get("/api/v1/chatbots/cb_0000000000000000/leads", headers=tenant.headers)
    malformed = await api.get("/api/v1/chatbots/whatever/leads", headers=tenant.headers)
    bodies = []
    for resp in (foreign, missing, malformed):
        error = await error_of(resp, 404, "CHATBOT_NOT_FOUND")
        bodies.append((error["message"], error.get("details")))
    assert len(set(bodies)) == 1


async def test_a_workspace_never_reaches_another_workspaces_leads(api, tenant, other_tenant):
    theirs = await create_lead(api, other_tenant, name="Their Lead", email="t@them.io")
    mine = await create_lead(api, tenant, name="My Lead", email="m@me.io")
    # Through the other workspace's chatbot: 404 for everything.
    url = other_tenant.lead_url(theirs["id"])
    h = tenant.headers
    await error_of(await api.get(url, headers=h), 404, "CHATBOT_NOT_FOUND")
    await error_of(await api.put(url, json={"name": "x"}, headers=h), 404, "CHATBOT_NOT_FOUND")
    await error_of(
        await api.delete(url, params={"confirm": "true"}, headers=h), 404, "CHATBOT_NOT_FOUND"
    )
    await error_of(await api.get(other_tenant.leads_url, headers=h), 404, "CHATBOT_NOT_FOUND")
    await error_of(
        await api.post(other_tenant.leads_url, json={"name": "x", "email": "x@y.io"}, headers=h),
        404,
        "CHATBOT_NOT_FOUND",
    )
    # Their lead id under my own chatbot: not found either.
    mine_url = tenant.lead_url(theirs["id"])
    await error_of(await api.get(mine_url, headers=h), 404, "LEAD_NOT_FOUND")
    await error_of(await api.put(mine_url, json={"name": "x"}, headers=h), 404, "LEAD_NOT_FOUND")
    await error_of(
        await api.delete(mine_url, params={"confirm": "true"}, headers=h), 404, "LEAD_NOT_FOUND"
    )
    listing = await data_of(await api.get(tenant.leads_url, params={"search": "their"}, headers=h))
    assert listing["leads"] == []
    # Nothing of theirs changed.
    still = await data_of(await api.get(url, headers=other_tenant.headers))
    assert still == theirs
    own = await data_of(await api.get(tenant.lead_url(mine["id"]), headers=h))
    assert own == mine


async def test_second_chatbot_of_same_workspace_is_reachable(api, accounts, tenant):
    chatbot = await accounts.create_chatbot(workspace_id=tenant.workspace_id, name="Second")
    resp = await api.get(f"/api/v1/chatbots/{chatbot['id']}/leads", headers=tenant.headers)
    assert (await data_of(resp))["leads"] == []
