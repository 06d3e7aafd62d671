"""POST …/leads/batch: independent items, one result each."""

import io
import json

from ..conftest import make_tenant
from .helpers import LEAD_ID, create_lead, data_of, error_of


async def batch(api, tenant, body):
    # As a stream: aiohttp warns about large bodies passed as bytes.
    return await api.post(
        tenant.leads_url + "/batch",
        data=io.BytesIO(json.dumps(body).encode()),
        headers={**tenant.headers, "Content-Type": "application/json"},
    )


async def test_items_are_independent_and_answered_in_order(api, tenant):
    body = {
        "leads": [
            {"name": "A", "email": "a@example.com", "metadata": {"n": 1}},
            {"name": "B", "email": "not-an-email"},
            "not an object",
            {"name": "C", "email": "c@example.com", "id": "lead_0000000000000000"},
            {"name": "D", "email": "d@example.com", "status": "qualified"},
        ]
    }
    data = await data_of(await batch(api, tenant, body))
    assert [r["index"] for r in data["results"]] == [0, 1, 2, 3, 4]
    assert [r["status"] for r in data["results"]] == [201, 400, 400, 400, 201]
    assert (data["created"], data["updated"], data["failed"]) == (2, 0, 3)
    assert data["results"][1]["error"]["code"] == "VALIDATION_ERROR"
    assert "email" in data["results"][1]["error"]["details"]
    assert "id" in data["results"][3]["error"]["details"]
    for result in (data["results"][0], data["results"][4]):
        assert LEAD_ID.match(result["lead"]["id"])
        stored = await data_of(
            await api.get(tenant.lead_url(result["lead"]["id"]), headers=tenant.headers)
        )
        assert stored == result["lead"]
    listing = await data_of(await api.get(tenant.leads_url, headers=tenant.headers))
    assert listing["pagination"]["total"] == 2


async def test_a_batch_upsert_merges_by_email(api, tenant):
    known = await create_lead(api, tenant, email="k@example.com", metadata={"a": 1})
    body = {
        "upsert": "email",
        "leads": [
            {"name": "K", "email": "K@example.com", "metadata": {"b": 2}},
            {"name": "N", "email": "n@example.com"},
            {"name": "N2", "email": "N@example.com", "metadata": {"c": 3}},
        ],
    }
    data = await data_of(await batch(api, tenant, body))
    assert [r["status"] for r in data["results"]] == [200, 201, 200]
    assert data["results"][0]["lead"]["id"] == known["id"]
    assert data["results"][0]["lead"]["metadata"] == {"a": 1, "b": 2}
    assert data["results"][2]["lead"]["id"] == data["results"][1]["lead"]["id"]
    assert data["results"][2]["lead"]["name"] == "N2"
    listing = await data_of(await api.get(tenant.leads_url, headers=tenant.headers))
    assert listing["pagination"]["total"] == 2


async def test_a_hundred_items_at_once(api, tenant):
    body = {"leads": [{"name": f"L{i}", "email": f"l{i}@example.com"} for i in range(100)]}
    data = await data_of(await batch(api, tenant, body))
    assert data["created"] == 100
    listing = await data_of(await api.get(tenant.leads_url, headers=tenant.headers))
    assert listing["pagination"]["total"] == 100


async def test_malformed_batches_are_400_and_create_nothing(api, tenant):
    for body in (
        {"leads": []},
        {"leads": [{"name": "A", "email": "a@example.com"}] * 101},
        {"leads": {"name": "A"}},
        {"leads": [{"name": "A", "email": "a@example.com"}], "upsert": "phone"},
        {"leads": [{"name": "A", "email": "a@example.com"}], "extra": 1},
        {},
    ):
        await error_of(await batch(api, tenant, body), 400, "VALIDATION_ERROR")
    listing = await data_of(await api.get(tenant.leads_url, headers=tenant.headers))
    assert listing["pagination"]["total"] == 0


async def test_body_limit_is_one_mebibyte_for_batches_only(api, tenant):
    item = {"name": "A", "email": "a@example.com", "metadata": {"pad": "x" * 8000}}
    body = {"leads": [item] * 100}  # ~800 KiB: under the batch limit, over a create's
    data = await data_of(await batch(api, tenant, body))
    assert data["created"] == 100
    big = {"leads": [{**item, "metadata": {"pad": "x" * 15000}}] * 80}
    await error_of(await batch(api, tenant, big), 413, "PAYLOAD_TOO_LARGE")
    create = {
        "name": "A",
        "email": "a@example.com",
        "metadata": {f"k{i}": "x" * 9000 for i in range(8)},
    }
    resp = await api.post(tenant.leads_url, json=create, headers=tenant.headers)
    await error_of(resp, 413, "PAYLOAD_TOO_LARGE")


async def test_a_batch_is_tenant_isolated(api, tenant, other_tenant):
    resp = await api.post(
        tenant.leads_url + "/batch",
        json={"leads": [{"name": "A", "email": "a@example.com"}]},
        headers=other_tenant.headers,
    )
    await error_of(resp, 404, "CHATBOT_NOT_FOUND")


async def test_a_batch_costs_one_token_per_item_and_all_or_nothing(api, accounts):
    small = await make_tenant(accounts, rate_limit_capacity=10, rate_limit_refill=0.001)
    items = [{"name": f"L{i}", "email": f"l{i}@example.com"} for i in range(6)]
    resp = await batch(api, small, {"leads": items})
    assert (await data_of(resp))["created"] == 6
    assert resp.headers["X-RateLimit-Remaining"] == "4"
    resp = await batch(api, small, {"leads": items})  # 6 more: only 4 left
    error = await error_of(resp, 429, "RATE_LIMITED")
    assert int(resp.headers["Retry-After"]) >= 1 and error["message"]
    listing = await data_of(await api.get(small.leads_url, headers=small.headers))
    assert listing["pagination"]["total"] == 6
    # The refused batch spent its first token only, the listing one: 2 are left.
    resp = await batch(api, small, {"leads": items[:2]})
    assert (await data_of(resp))["created"] == 2
    assert resp.headers["X-RateLimit-Remaining"] == "0"
