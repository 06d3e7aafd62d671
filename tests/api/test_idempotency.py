"""Idempotency-Key: the first result is kept and replayed; misuse is refused."""

import asyncio
import uuid

import pytest

from pollybot_leads.idempotency.records import record_id

from .helpers import create_lead, data_of, error_of


def keyed(tenant, key):
    return {**tenant.headers, "Idempotency-Key": key}


async def lead_count(api, tenant):
    resp = await api.get(tenant.leads_url, headers=tenant.headers)
    return (await data_of(resp))["pagination"]["total"]


async def test_a_retried_create_is_replayed_byte_for_byte_and_stores_one_lead(api, tenant):
    key = str(uuid.uuid4())
    payload = {"name": "Ann", "email": "ann@example.com"}
    first = await api.post(tenant.leads_url, json=payload, headers=keyed(tenant, key))
    body = await first.read()
    assert first.status == 201 and "Idempotent-Replayed" not in first.headers
    again = await api.post(tenant.leads_url, json=payload, headers=keyed(tenant, key))
    assert again.status == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await again.read() == body
    for header in ("Location", "ETag", "Content-Type"):
        assert again.headers[header] == first.headers[header]
    assert again.headers["X-Request-Id"] != first.headers["X-Request-Id"]
    assert await lead_count(api, tenant) == 1


async def test_fifty_concurrent_identical_posts_create_exactly_one_lead(api, tenant):
    key = str(uuid.uuid4())
    payload = {"name": "Bo", "email": "bo@example.com"}
    responses = await asyncio.gather(
        *(api.post(tenant.leads_url, json=payload, headers=keyed(tenant, key)) for _ in range(50))
    )
    ids = set()
    for resp in responses:
        if resp.status == 409:
            await error_of(resp, 409, "IDEMPOTENCY_IN_PROGRESS")
            assert resp.headers["Retry-After"] == "1"
        else:
            ids.add((await data_of(resp, 201))["id"])
    assert len(ids) == 1
    assert await lead_count(api, tenant) == 1
    # Once the first is done, every retry gets its result.
    again = await api.post(tenant.leads_url, json=payload, headers=keyed(tenant, key))
    assert (await data_of(again, 201))["id"] in ids


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        ("post", "", {"name": "Other", "email": "ann@example.com"}),
        ("post", "?upsert=email", {"name": "Ann", "email": "ann@example.com"}),
        ("put", "/lead_0000000000000000", {"name": "Ann", "email": "ann@example.com"}),
    ],
)
async def test_the_same_key_on_another_request_is_422_and_changes_nothing(
    api, tenant, method, path, payload
):
    key = str(uuid.uuid4())
    first = {"name": "Ann", "email": "ann@example.com"}
    await data_of(await api.post(tenant.leads_url, json=first, headers=keyed(tenant, key)), 201)
    resp = await getattr(api, method)(
        tenant.leads_url + path, json=payload, headers=keyed(tenant, key)
    )
    await error_of(resp, 422, "IDEMPOTENCY_KEY_REUSED")
    assert await lead_count(api, tenant) == 1


async def test_keys_are_scoped_to_the_api_key(api, tenant, other_tenant):
    key = str(uuid.uuid4())
    payload = {"name": "Ann", "email": "ann@example.com"}
    mine = await data_of(
        await api.post(tenant.leads_url, json=payload, headers=keyed(tenant, key)), 201
    )
    theirs = await api.post(other_tenant.leads_url, json=payload, headers=keyed(other_tenant, key))
    assert "Idempotent-Replayed" not in theirs.headers
    assert (await data_of(theirs, 201))["id"] != mine["id"]


async def test_a_kept_4xx_is_replayed_and_a_retryable_one_is_not(api, tenant):
    key = str(uuid.uuid4())
    bad = {"name": "Ann", "email": "not-an-email"}
    first = await api.post(tenant.leads_url, json=bad, headers=keyed(tenant, key))
    error = await error_of(first, 400, "VALIDATION_ERROR")
    again = await api.post(tenant.leads_url, json=bad, headers=keyed(tenant, key))
    assert again.status == 400 and again.headers["Idempotent-Replayed"] == "true"
    assert (await again.json())["error"] == error  # the first answer, its request id too
    # A 404 from inside the write is kept as well.
    key = str(uuid.uuid4())
    url = tenant.lead_url("lead_0123456789abcdef")
    for replayed in (False, True):
        resp = await api.put(url, json={"name": "X"}, headers=keyed(tenant, key))
        assert resp.status == 404
        assert ("Idempotent-Replayed" in resp.headers) is replayed


async def test_update_and_delete_replay_their_first_result(api, tenant):
    lead = await create_lead(api, tenant)
    url = tenant.lead_url(lead["id"])
    key = str(uuid.uuid4())
    first = await data_of(
        await api.put(url, json={"status": "contacted"}, headers=keyed(tenant, key))
    )
    # Someone else changes the lead; the retry still gets the first result, unchanged.
    await data_of(await api.put(url, json={"status": "lost"}, headers=tenant.headers))
    again = await api.put(url, json={"status": "contacted"}, headers=keyed(tenant, key))
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await data_of(again) == first
    now = await data_of(await api.get(url, headers=tenant.headers))
    assert now["status"] == "lost" and len(now["statusHistory"]) == 3

    key = str(uuid.uuid4())
    gone = await data_of(await api.delete(url + "?confirm=true", headers=keyed(tenant, key)))
    again = await api.delete(url + "?confirm=true", headers=keyed(tenant, key))
    assert again.status == 200 and await data_of(again) == gone


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "a\tb"])
async def test_a_malformed_key_is_400_and_creates_nothing(api, tenant, key):
    resp = await api.post(
        tenant.leads_url,
        json={"name": "Ann", "email": "ann@example.com"},
        headers={**tenant.headers, "Idempotency-Key": key},
    )
    error = await error_of(resp, 400, "VALIDATION_ERROR")
    assert "Idempotency-Key" in error["details"]
    assert await lead_count(api, tenant) == 0


async def test_a_batch_is_replayed_whole(api, tenant):
    key = str(uuid.uuid4())
    batch = {"leads": [{"name": "A", "email": "a@example.com"}, {"name": "B", "email": "bad"}]}
    url = tenant.leads_url + "/batch"
    first = await api.post(url, json=batch, headers=keyed(tenant, key))
    again = await api.post(url, json=batch, headers=keyed(tenant, key))
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await again.read() == await first.read()
    assert await lead_count(api, tenant) == 1


@pytest.mark.parametrize(("method", "path"), [("put", "/batch"), ("delete", "")])
async def test_a_method_the_route_lacks_is_405_and_leaves_the_key_alone(api, tenant, method, path):
    payload = {"leads": [{"name": "Ann", "email": "ann@example.com"}]}
    url = tenant.leads_url + "/batch"
    used = str(uuid.uuid4())
    await data_of(await api.post(url, json=payload, headers=keyed(tenant, used)))
    fresh = str(uuid.uuid4())
    for key in (used, fresh):
        resp = await getattr(api, method)(
            tenant.leads_url + path, json=payload, headers=keyed(tenant, key)
        )
        await error_of(resp, 405, "METHOD_NOT_ALLOWED")
        assert "Idempotent-Replayed" not in resp.headers
    # The 405 was not kept: the fresh key still names its first real request.
    resp = await api.post(url, json=payload, headers=keyed(tenant, fresh))
    assert (await data_of(resp))["created"] == 1
    assert "Idempotent-Replayed" not in resp.headers
    assert await lead_count(api, tenant) == 2


async def test_a_retry_after_the_lead_was_deleted_is_410_and_creates_nothing(api, tenant, mongo):
    key = str(uuid.uuid4())
    payload = {"name": "Gone Person", "email": "gone@example.com"}
    first = await api.post(tenant.leads_url, json=payload, headers=keyed(tenant, key))
    lead = await data_of(first, 201)
    resp = await api.delete(
        tenant.lead_url(lead["id"]), params={"confirm": "true"}, headers=tenant.headers
    )
    await data_of(resp)
    for body in (payload, {"name": "Other", "email": "other@example.com"}):
        again = await api.post(tenant.leads_url, json=body, headers=keyed(tenant, key))
        await error_of(again, 410, "LEAD_DELETED")
        assert "Idempotent-Replayed" not in again.headers
    assert await lead_count(api, tenant) == 0
    # The key's record keeps its time and API key id alone: no response, no digest of
    # the body (the key id, for its workspace's deletion).
    record = await mongo.db["idempotency_keys"].find_one({"_id": record_id(tenant.key_id, key)})
    assert set(record) == {"_id", "state", "createdAt", "scope"} and record["state"] == "gone"
    assert record["scope"] == tenant.key_id
    fresh = await api.post(tenant.leads_url, json=payload, headers=keyed(tenant, str(uuid.uuid4())))
    assert (await data_of(fresh, 201))["id"] != lead["id"]
