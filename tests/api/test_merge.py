"""One person, one lead: a lead's duplicates, and merging leads into one (contract v1.2,
"Identity: … duplicates, merge")."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from pollybot_leads.store.client import Mongo
from tests.conftest import Tenant, make_tenant, own_database
from tests.store_scan import copies_in_store, person

from .helpers import create_lead, data_of, error_of

settings, mongo, accounts, api = own_database("merge")


@pytest.fixture
async def tenant(accounts) -> Tenant:
    return await make_tenant(accounts)


@pytest.fixture
async def other_tenant(accounts) -> Tenant:
    return await make_tenant(accounts)


async def merge(api: TestClient, tenant: Tenant, target: str, sources: list[str], **more: Any):
    return await api.post(
        tenant.lead_url(target) + "/merge",
        json={"sourceIds": sources, **more.pop("body", {})},
        headers={**tenant.headers, **more},
    )


async def put(api: TestClient, tenant: Tenant, lead_id: str, body: dict[str, Any]):
    return await api.put(tenant.lead_url(lead_id), json=body, headers=tenant.headers)


async def feed(api: TestClient, tenant: Tenant) -> list[dict[str, Any]]:
    url = f"/api/v1/chatbots/{tenant.chatbot_id}/events"
    return (await data_of(await api.get(url, params={"limit": "100"}, headers=tenant.headers)))[
        "events"
    ]


async def documents(mongo: Mongo, *tenants: Tenant) -> dict[str, list[Any]]:
    """Every document of every collection that names the tenants' workspaces, chatbots or
    keys (the rest of the database is other tests' and their background jobs')."""
    names = sorted(await mongo.db.list_collection_names())
    ours = [i for t in tenants for i in (t.workspace_id, t.chatbot_id, t.key_id)]
    found = {n: await mongo.db[n].find({}).sort("_id", 1).to_list(None) for n in names}
    return {n: [d for d in docs if any(i in repr(d) for i in ours)] for n, docs in found.items()}


# --- the field rules -----------------------------------------------------------------------


async def test_a_merge_follows_the_field_rules(api, tenant):
    old = await create_lead(
        api, tenant, name="Old", email="old@example.com", phone="+14155550001",
        source="web", metadata={"a": "old", "b": "old", "deep": {"x": 1}},
    )  # fmt: skip
    newer = await create_lead(
        api, tenant, name="Newer", email="newer@example.com", phone="+14155550002",
        externalId="crm-9", metadata={"b": "newer", "c": "newer", "deep": {"y": 2}},
    )  # fmt: skip
    await data_of(await put(api, tenant, newer["id"], {"status": "qualified"}))
    target = await create_lead(
        api, tenant, name="Target", email="target@example.com", metadata={"c": "target"}
    )
    await data_of(await put(api, tenant, old["id"], {"status": "contacted"}))
    # ``old`` was updated last: the most recently updated source with a phone wins.
    merged = await data_of(await merge(api, tenant, target["id"], [old["id"], newer["id"]]))
    assert merged["id"] == target["id"]
    assert merged["name"] == "Target" and merged["email"] == "target@example.com"
    assert merged["phone"] == "+14155550001" and merged["phoneE164"] == "+14155550001"
    assert merged["source"] == "web" and merged["externalId"] == "crm-9"
    assert merged["status"] == target["status"]
    # Sources oldest-updated first (newer, then old), the target on top.
    assert merged["metadata"] == {"a": "old", "b": "old", "c": "target", "deep": {"x": 1, "y": 2}}
    history = merged["statusHistory"]
    assert [h["changedAt"] for h in history] == sorted(h["changedAt"] for h in history)
    assert sorted(h["status"] for h in history) == sorted(
        ["new", "new", "new", "qualified", "contacted"]
    )
    assert merged["createdAt"] == old["createdAt"]
    assert merged["updatedAt"] > target["updatedAt"]
    got = await api.get(tenant.lead_url(target["id"]), headers=tenant.headers)
    assert await data_of(got) == merged


async def test_merged_sources_answer_lead_merged_and_their_events_say_so(api, tenant):
    target = await create_lead(api, tenant, email="t@example.com")
    sources = [await create_lead(api, tenant, email=f"s{i}@example.com") for i in range(2)]
    ids = [s["id"] for s in sources]
    await data_of(await merge(api, tenant, target["id"], ids))
    for lead_id in ids:
        for method in ("GET", "PUT", "DELETE"):
            resp = await api.request(
                method,
                tenant.lead_url(lead_id) + ("?confirm=true" if method == "DELETE" else ""),
                json={"name": "x"} if method == "PUT" else None,
                headers=tenant.headers,
            )
            error = await error_of(resp, 404, "LEAD_MERGED")
            assert error["details"] == {"mergedInto": target["id"]}
    again = await merge(api, tenant, target["id"], ids[:1])
    await error_of(again, 404, "LEAD_MERGED")
    events = await feed(api, tenant)
    merged = [e for e in events if e["type"] == "lead.merged"]
    assert len(merged) == 1 and merged[0]["event"] == "LEAD_MERGED"
    assert merged[0]["data"]["mergedIds"] == ids and merged[0]["data"]["lead"]["id"] == target["id"]
    deleted = [e for e in events if e["type"] == "lead.deleted"]
    assert [e["data"] for e in deleted] == [{"lead": {"id": i}, "reason": "merged"} for i in ids]
    # The sources' earlier events are redacted, as after a DELETE.
    created = [e for e in events if e["type"] == "lead.created" and e["data"]["lead"]["id"] in ids]
    assert all(
        e["data"] == {"lead": {"id": e["data"]["lead"]["id"]}, "redacted": True} for e in created
    )
    listing = await data_of(await api.get(tenant.leads_url, headers=tenant.headers))
    assert listing["pagination"]["total"] == 1


async def test_no_copy_of_a_sources_own_data_is_left(api, mongo, tenant):
    target = await create_lead(api, tenant, **person())
    body = person()
    source = await create_lead(api, tenant, **body)
    await data_of(await merge(api, tenant, target["id"], [source["id"]]))
    # Its name and email lost to the target's: nowhere in the store.
    assert await copies_in_store(mongo.db, [body["name"], body["email"]]) == []


async def test_a_dry_run_answers_the_merged_lead_and_changes_nothing(api, mongo, tenant):
    target = await create_lead(api, tenant, email="dry@example.com", metadata={"t": 1})
    source = await create_lead(api, tenant, email="src@example.com", phone="+442071838750")
    before = await documents(mongo, tenant)
    resp = await merge(api, tenant, target["id"], [source["id"]], body={"dryRun": True})
    preview = await data_of(resp)
    assert preview["phoneE164"] == "+442071838750" and preview["metadata"] == {"t": 1}
    assert await documents(mongo, tenant) == before
    merged = await data_of(await merge(api, tenant, target["id"], [source["id"]]))
    assert {k: v for k, v in merged.items() if k != "updatedAt"} == {
        k: v for k, v in preview.items() if k != "updatedAt"
    }


# --- refusals -----------------------------------------------------------------------------


async def test_another_chatbots_or_workspaces_lead_is_a_404_and_nothing_changes(
    api, mongo, accounts, tenant, other_tenant
):
    target = await create_lead(api, tenant, email="mine@example.com")
    theirs = await create_lead(api, other_tenant, email="theirs@example.com")
    second = await accounts.create_chatbot(workspace_id=tenant.workspace_id, name="Two")
    sibling = await data_of(
        await api.post(
            f"/api/v1/chatbots/{second['id']}/leads",
            json={"name": "S", "email": "s@example.com"},
            headers=tenant.headers,
        ),
        201,
    )
    before = await documents(mongo, tenant, other_tenant)
    for source in (theirs["id"], sibling["id"], "lead_0000000000000000"):
        await error_of(await merge(api, tenant, target["id"], [source]), 404, "LEAD_NOT_FOUND")
    await error_of(
        await merge(api, other_tenant, target["id"], [theirs["id"]]), 404, "LEAD_NOT_FOUND"
    )
    assert await documents(mongo, tenant, other_tenant) == before


@pytest.mark.parametrize(
    "body",
    [
        {"sourceIds": []},
        {"sourceIds": [f"lead_{i:016x}" for i in range(11)]},
        {"sourceIds": ["lead_0000000000000001", "lead_0000000000000001"]},
        {"sourceIds": ["lead_00"]},
        {"sourceIds": "lead_0000000000000001"},
        {"sourceIds": ["lead_0000000000000001"], "dryRun": "yes"},
        {"sourceIds": ["lead_0000000000000001"], "other": 1},
        {},
        {"sourceIds": [None]},
    ],
)
async def test_bad_merge_bodies_are_400_and_change_nothing(api, mongo, tenant, body):
    target = await create_lead(api, tenant, email="bad@example.com")
    before = await documents(mongo, tenant)
    resp = await api.post(
        tenant.lead_url(target["id"]) + "/merge", json=body, headers=tenant.headers
    )
    await error_of(resp, 400, "VALIDATION_ERROR")
    assert await documents(mongo, tenant) == before


async def test_a_lead_is_not_merged_into_itself_and_if_match_holds(api, tenant):
    target = await create_lead(api, tenant, email="self@example.com")
    source = await create_lead(api, tenant, email="other@example.com")
    await error_of(await merge(api, tenant, target["id"], [target["id"]]), 400, "VALIDATION_ERROR")
    stale = await merge(api, tenant, target["id"], [source["id"]], **{"If-Match": '"nope"'})
    await error_of(stale, 412, "PRECONDITION_FAILED")
    got = await api.get(tenant.lead_url(source["id"]), headers=tenant.headers)
    etag = (await api.get(tenant.lead_url(target["id"]), headers=tenant.headers)).headers["ETag"]
    assert got.status == 200
    await data_of(await merge(api, tenant, target["id"], [source["id"]], **{"If-Match": etag}))


async def test_a_merge_racing_twenty_updates_loses_none_answered_200(api, tenant):
    target = await create_lead(api, tenant, email="race-t@example.com")
    sources = [await create_lead(api, tenant, email=f"race-{i}@example.com") for i in range(3)]
    ids = [s["id"] for s in sources]
    names = [target["id"], *ids]

    async def update(n: int) -> tuple[int, str]:
        await asyncio.sleep(0.002 * n)
        lead_id = names[n % len(names)]
        resp = await put(api, tenant, lead_id, {"metadata": {f"u{n}": n}})
        await resp.read()
        return resp.status, f"u{n}"

    async def do_merge() -> int:
        await asyncio.sleep(0.02)
        resp = await merge(api, tenant, target["id"], ids)
        await resp.read()
        return resp.status

    *updates, merged = await asyncio.gather(*(update(n) for n in range(20)), do_merge())
    assert merged == 200
    assert {status for status, _ in updates} <= {200, 404}
    lead = await data_of(await api.get(tenant.lead_url(target["id"]), headers=tenant.headers))
    answered = {key for status, key in updates if status == 200}
    assert answered <= set(lead["metadata"]), answered - set(lead["metadata"])


# --- duplicates ---------------------------------------------------------------------------


async def test_duplicates_share_an_email_or_a_phone_within_the_chatbot(api, tenant, other_tenant):
    lead = await create_lead(api, tenant, email="Dup@Example.com", phone="+1 (415) 555-2671")
    by_email = await create_lead(api, tenant, email="dup@example.COM")
    by_phone = await create_lead(api, tenant, email="else@example.com", phone="+14155552671")
    both = await create_lead(api, tenant, email="DUP@example.com", phone="+1-415-555-2671")
    await create_lead(api, tenant, email="unrelated@example.com", phone="+14155550000")
    await create_lead(api, other_tenant, email="dup@example.com", phone="+14155552671")
    url = tenant.lead_url(lead["id"]) + "/duplicates"
    found = (await data_of(await api.get(url, headers=tenant.headers)))["duplicates"]
    assert [(d["lead"]["id"], d["matchedOn"]) for d in found] == [
        (both["id"], ["email", "phone"]),
        (by_phone["id"], ["phone"]),
        (by_email["id"], ["email"]),
    ]
    assert "statusHistory" not in found[0]["lead"]
    limited = await data_of(await api.get(url, params={"limit": "1"}, headers=tenant.headers))
    assert [d["lead"]["id"] for d in limited["duplicates"]] == [both["id"]]
    for bad in ({"limit": "0"}, {"limit": "101"}, {"other": "1"}):
        await error_of(
            await api.get(url, params=bad, headers=tenant.headers), 400, "VALIDATION_ERROR"
        )
    theirs = await api.get(
        f"/api/v1/chatbots/{other_tenant.chatbot_id}/leads/{lead['id']}/duplicates",
        headers=other_tenant.headers,
    )
    await error_of(theirs, 404, "LEAD_NOT_FOUND")


async def test_a_webhook_endpoint_can_subscribe_to_lead_merged(api, tenant):
    resp = await api.post(
        "/api/v1/webhooks",
        json={"url": "https://example.com/merged", "events": ["lead.merged"]},
        headers=tenant.headers,
    )
    assert (await data_of(resp, 201))["events"] == ["lead.merged"]
