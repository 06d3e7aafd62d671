"""Deletion is permanent everywhere (contract v1.2): once a lead's deletion commits, a
scan of every collection of the database finds none of its personal data; its earlier
events stay in the feed in order, redacted; a kept Idempotency-Key result holding it is
dropped, and a retry with the key answers 410 LEAD_DELETED and creates nothing.

The tests run on a database of their own, so that each scan reads every document of
every collection (a few hundred), not the whole session's.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import Tenant, own_database
from tests.store_scan import collections_of, copies_in_store, person, values_of

from .helpers import data_of, error_of

RETRIES = 5  # a 503 (write lane full) is sent again after Retry-After, as a client would


settings, mongo, accounts, api = own_database("deletion")


def keyed(tenant: Tenant, key: str | None = None) -> dict[str, str]:
    return {**tenant.headers, "Idempotency-Key": key or str(uuid.uuid4())}


async def send(api: TestClient, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    for _ in range(RETRIES):
        resp = await api.request(method, url, **kwargs)
        body = await resp.json()
        if resp.status != 503:
            return resp.status, body
        await asyncio.sleep(float(resp.headers["Retry-After"]))
    raise AssertionError(f"503 {RETRIES} times in a row")


async def delete(api: TestClient, tenant: Tenant, lead_id: str, **headers: str) -> Any:
    resp = await api.delete(
        tenant.lead_url(lead_id), params={"confirm": "true"}, headers={**tenant.headers, **headers}
    )
    return await data_of(resp)


async def feed(api: TestClient, tenant: Tenant) -> list[dict[str, Any]]:
    url = f"/api/v1/chatbots/{tenant.chatbot_id}/events"
    events: list[dict[str, Any]] = []
    while True:
        params = {"after": str(events[-1]["sequence"] if events else 0), "limit": "100"}
        page = await data_of(await api.get(url, params=params, headers=tenant.headers))
        events += page["events"]
        if not page["pagination"]["hasMore"]:
            return events


async def a_lead_with_copies(api: TestClient, tenant: Tenant) -> tuple[dict[str, Any], list[str]]:
    """A lead with a copy of its data in every kind of record a lead makes: created and
    changed under Idempotency-Keys (renamed, its status and metadata changed), upserted by
    its email, and in a batch; returns it and the personal values it ever had."""
    body = person()
    resp = await api.post(tenant.leads_url, json=body, headers=keyed(tenant))
    lead = await data_of(resp, 201)
    renamed = f"Renamed Person {secrets.token_hex(4)}"
    change = {"name": renamed, "status": "contacted", "metadata": {"later": f"m-{renamed}"}}
    resp = await api.put(tenant.lead_url(lead["id"]), json=change, headers=keyed(tenant))
    await data_of(resp)
    upsert = {"name": body["name"], "email": body["email"].upper(), "source": "chat"}
    resp = await api.post(tenant.leads_url + "?upsert=email", json=upsert, headers=keyed(tenant))
    assert (await data_of(resp))["id"] == lead["id"]
    batch = {"leads": [{"email": body["email"], "name": body["name"]}], "upsert": "email"}
    resp = await api.post(tenant.leads_url + "/batch", json=batch, headers=keyed(tenant))
    assert (await data_of(resp))["results"][0]["lead"]["id"] == lead["id"]
    return lead, [*values_of(body), renamed, f"m-{renamed}"]


async def test_after_a_delete_no_collection_holds_any_of_the_leads_data(api, mongo, tenant):
    lead, values = await a_lead_with_copies(api, tenant)
    kept_body = person()
    kept = await data_of(
        await api.post(tenant.leads_url, json=kept_body, headers=keyed(tenant)), 201
    )
    before = await copies_in_store(mongo.db, values)
    # The scan sees what it looks for: the lead, its events and its kept results.
    assert {"leads", "events", "idempotency_keys"} <= collections_of(before), before
    # The name bounds of the lead counters never held a name.
    assert "lead_counts" not in collections_of(before), before
    await delete(api, tenant, lead["id"], **{"Idempotency-Key": str(uuid.uuid4())})
    assert await copies_in_store(mongo.db, values) == []
    # The chatbot's other lead is untouched, everywhere.
    survivor = await copies_in_store(mongo.db, values_of(kept_body))
    assert {"leads", "events", "idempotency_keys"} <= collections_of(survivor)
    resp = await api.get(tenant.lead_url(kept["id"]), headers=tenant.headers)
    assert await data_of(resp) == kept
    audit = await mongo.db["audit_log"].find_one({"leadId": lead["id"]})
    assert audit["action"] == "lead.delete" and audit["chatbotId"] == tenant.chatbot_id


async def test_the_feed_keeps_a_deleted_leads_events_in_order_redacted(api, tenant):
    lead, _ = await a_lead_with_copies(api, tenant)
    other = await data_of(
        await api.post(tenant.leads_url, json=person(), headers=tenant.headers), 201
    )
    before = await feed(api, tenant)
    await delete(api, tenant, lead["id"])
    after = await feed(api, tenant)
    assert len(after) == len(before) + 1
    assert [e["sequence"] for e in after] == list(range(1, len(after) + 1))
    for old, new in zip(before, after, strict=False):
        assert {k: v for k, v in new.items() if k != "data"} == {
            k: v for k, v in old.items() if k != "data"
        }  # id, type, event, sequence, times: as they were
        if old["data"]["lead"]["id"] == lead["id"]:
            assert new["data"] == {"lead": {"id": lead["id"]}, "redacted": True}
        else:
            assert new["data"] == old["data"]
    assert any(e["data"]["lead"]["id"] == other["id"] for e in after)
    assert [e["type"] for e in before if e["data"]["lead"]["id"] == lead["id"]] == [
        "lead.created",
        "lead.updated",
        "lead.updated",
        "lead.updated",
    ]
    last = after[-1]
    assert last["type"] == "lead.deleted" and last["data"] == {"lead": {"id": lead["id"]}}


async def test_a_retry_of_a_deleted_leads_writes_is_410_and_creates_nothing(api, tenant):
    body = person()
    create_key, update_key, batch_key, delete_key = (str(uuid.uuid4()) for _ in range(4))
    resp = await api.post(tenant.leads_url, json=body, headers=keyed(tenant, create_key))
    lead = await data_of(resp, 201)
    resp = await api.put(
        tenant.lead_url(lead["id"]), json={"status": "lost"}, headers=keyed(tenant, update_key)
    )
    await data_of(resp)
    other_body = person()
    batch = {"leads": [other_body, {"email": body["email"], "name": "B"}], "upsert": "email"}
    url = tenant.leads_url + "/batch"
    resp = await api.post(url, json=batch, headers=keyed(tenant, batch_key))
    other_id = (await data_of(resp))["results"][0]["lead"]["id"]
    deleted = await delete(api, tenant, lead["id"], **{"Idempotency-Key": delete_key})
    events = await feed(api, tenant)

    retries = [
        ("POST", tenant.leads_url, body, create_key),
        ("POST", tenant.leads_url, person(), create_key),  # another body: 410 all the same
        ("PUT", tenant.lead_url(lead["id"]), {"status": "lost"}, update_key),
        ("POST", url, batch, batch_key),
    ]
    for method, where, payload, key in retries:
        resp = await api.request(method, where, json=payload, headers=keyed(tenant, key))
        error = await error_of(resp, 410, "LEAD_DELETED")
        assert "Idempotency-Key" in error["message"]
        assert "Idempotent-Replayed" not in resp.headers
    # Nothing was created or changed: the batch's other lead is as it was, no event added.
    listing = await data_of(await api.get(tenant.leads_url, headers=tenant.headers))
    assert [found["id"] for found in listing["leads"]] == [other_id]
    assert await feed(api, tenant) == events
    # The delete's own result holds no personal data: it is replayed as it was.
    resp = await api.delete(
        tenant.lead_url(lead["id"]), params={"confirm": "true"}, headers=keyed(tenant, delete_key)
    )
    assert resp.headers["Idempotent-Replayed"] == "true"
    assert await data_of(resp) == deleted
    # A new key writes again.
    resp = await api.post(tenant.leads_url, json=body, headers=keyed(tenant))
    assert (await data_of(resp, 201))["id"] != lead["id"]


async def test_concurrent_writes_on_the_chatbot_leave_no_copy_of_the_deleted_leads(
    api, mongo, tenant
):
    doomed = [await a_lead_with_copies(api, tenant) for _ in range(6)]
    others = [person() for _ in range(30)]

    async def delete_one(lead_id: str) -> int:
        status, _ = await send(
            api,
            "DELETE",
            tenant.lead_url(lead_id) + "?confirm=true",
            headers=keyed(tenant),
        )
        return status

    async def race_update(lead_id: str, n: int) -> int:
        # A write of the lead itself racing its deletion: done before it (then redacted
        # with the rest) or refused after it, never a copy left behind.
        change = {"name": f"Racer {n} {lead_id}", "metadata": {"race": f"race-{lead_id}-{n}"}}
        status, _ = await send(
            api, "PUT", tenant.lead_url(lead_id), json=change, headers=keyed(tenant)
        )
        return status

    async def write_other(n: int, body: dict[str, Any]) -> int:
        url = tenant.leads_url + ("?upsert=email" if n % 2 else "")
        status, _ = await send(api, "POST", url, json=body, headers=keyed(tenant))
        return status

    jobs = [delete_one(lead["id"]) for lead, _ in doomed]
    jobs += [race_update(lead["id"], n) for n in range(3) for lead, _ in doomed]
    jobs += [write_other(n, body) for n, body in enumerate(others)]
    statuses = await asyncio.gather(*jobs)
    assert statuses[: len(doomed)] == [200] * len(doomed)
    assert set(statuses[len(doomed) : len(doomed) * 4]) <= {200, 404}
    assert set(statuses[len(doomed) * 4 :]) == {201}
    values = [v for _, vs in doomed for v in vs]
    values += [f"race-{lead['id']}" for lead, _ in doomed]
    values += [f"Racer {n} {lead['id']}" for n in range(3) for lead, _ in doomed]
    assert await copies_in_store(mongo.db, values) == []
    kept = await copies_in_store(mongo.db, [body["email"] for body in others])
    assert {"leads", "events", "idempotency_keys"} <= collections_of(kept)
    listing = await data_of(await api.get(tenant.leads_url, headers=tenant.headers))
    assert listing["pagination"]["total"] == len(others)


async def test_another_workspaces_lead_with_the_same_data_is_untouched(
    api, mongo, tenant, other_tenant
):
    body = person()
    key = str(uuid.uuid4())
    mine = await data_of(await api.post(tenant.leads_url, json=body, headers=keyed(tenant)), 201)
    resp = await api.post(other_tenant.leads_url, json=body, headers=keyed(other_tenant, key))
    theirs = await data_of(resp, 201)
    await delete(api, tenant, mine["id"])
    resp = await api.get(other_tenant.lead_url(theirs["id"]), headers=other_tenant.headers)
    assert await data_of(resp) == theirs
    events = await feed(api, other_tenant)
    assert [e["data"]["lead"] for e in events] == [theirs]
    again = await api.post(other_tenant.leads_url, json=body, headers=keyed(other_tenant, key))
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await data_of(again, 201) == theirs
    # Every copy left is the other workspace's.
    found = await copies_in_store(mongo.db, values_of(body))
    assert {"leads", "events", "idempotency_keys"} <= collections_of(found)
    for copy in found:
        if copy.collection in ("leads", "events"):
            assert copy.doc["chatbotId"] == other_tenant.chatbot_id, copy
        else:
            assert mine["id"] not in repr(copy.doc), copy


HOSTILE = [
    {"name": 'Robert"); DROP TABLE leads;-- {"$ne": null}', "metadata": {"$where": "1"}},
    {"name": "Zoë Ångström 李小龍 \U0001f600", "metadata": {"k": "ünïcødé \u202e rtl"}},
    {"name": ".*", "metadata": {"re": "^lead_.*$", "data": {"lead": {"id": "lead_x"}}}},
    {"name": "lead_0123456789abcdef", "metadata": {"redacted": True, "lead": {"id": "x"}}},
]


@pytest.mark.parametrize(
    ("hostile", "refused"),
    list(zip(HOSTILE, [True, False, False, False], strict=True)),
    ids=["injection", "unicode", "regex", "lookalike"],
)
async def test_hostile_values_are_deleted_as_any_other(api, mongo, tenant, hostile, refused):
    body = person()
    body["name"] = f"{hostile['name']} {secrets.token_hex(3)}"
    body["metadata"] = {**body["metadata"], **hostile["metadata"]}
    status, created = await send(api, "POST", tenant.leads_url, json=body, headers=keyed(tenant))
    if refused:  # a metadata key starting with $: refused whole, nothing stored
        assert status == 400 and created["error"]["code"] == "VALIDATION_ERROR"
        assert await copies_in_store(mongo.db, values_of(body)) == []
        return
    lead = created["data"]
    assert status == 201 and lead["name"] == body["name"]
    await delete(api, tenant, lead["id"])
    assert await copies_in_store(mongo.db, values_of(body)) == []


@pytest.mark.parametrize(
    "lead_id",
    [
        "lead_../../x",
        '{"$ne": null}',
        "lead_0123456789ABCDEF",
        "lead_" + "0" * 200,
        "%00",
        "lead_0123456789abcde\u0000",
    ],
)
async def test_a_hostile_lead_id_deletes_nothing(api, mongo, tenant, lead_id):
    body = person()
    lead = await data_of(await api.post(tenant.leads_url, json=body, headers=tenant.headers), 201)
    before = await copies_in_store(mongo.db, values_of(body))
    resp = await api.delete(
        tenant.lead_url(lead_id.replace("/", "%2F")),
        params={"confirm": "true"},
        headers=tenant.headers,
    )
    assert resp.status in (404, 400), await resp.text()
    assert resp.status < 500
    assert (await resp.json())["success"] is False
    assert await copies_in_store(mongo.db, values_of(body)) == before
    resp = await api.get(tenant.lead_url(lead["id"]), headers=tenant.headers)
    assert await data_of(resp) == lead


async def test_another_chatbots_key_deletes_nothing(api, mongo, tenant, other_tenant):
    body = person()
    lead = await data_of(await api.post(tenant.leads_url, json=body, headers=tenant.headers), 201)
    before = await copies_in_store(mongo.db, values_of(body))
    # The other workspace's key on this chatbot, and on its own chatbot with this lead's id.
    resp = await api.delete(
        tenant.lead_url(lead["id"]), params={"confirm": "true"}, headers=other_tenant.headers
    )
    await error_of(resp, 404, "CHATBOT_NOT_FOUND")
    resp = await api.delete(
        other_tenant.lead_url(lead["id"]),
        params={"confirm": "true"},
        headers=other_tenant.headers,
    )
    await error_of(resp, 404, "LEAD_NOT_FOUND")
    assert await copies_in_store(mongo.db, values_of(body)) == before
    assert [
        e["data"]["lead"] for e in await feed(api, tenant) if e["data"]["lead"]["id"] == lead["id"]
    ] == [lead]
