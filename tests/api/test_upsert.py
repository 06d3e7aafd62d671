"""POST …/leads?upsert=email: create, or merge into the newest lead with that email."""

import asyncio

from .helpers import create_lead, data_of, error_of


async def upsert(api, tenant, **fields):
    return await api.post(tenant.leads_url + "?upsert=email", json=fields, headers=tenant.headers)


async def test_a_new_email_creates_and_a_known_one_merges_case_insensitively(api, tenant):
    created = await data_of(
        await upsert(api, tenant, name="Ann", email="Ann@Example.com", metadata={"a": 1}), 201
    )
    resp = await upsert(
        api, tenant, name="Ann B", email="ann@example.COM", status="contacted", metadata={"b": 2}
    )
    merged = await data_of(resp, 200)
    assert "Location" not in resp.headers and resp.headers["ETag"]
    assert merged["id"] == created["id"]
    assert merged["name"] == "Ann B" and merged["email"] == "ann@example.COM"
    assert merged["metadata"] == {"a": 1, "b": 2}
    assert [h["status"] for h in merged["statusHistory"]] == ["new", "contacted"]
    # Fields not sent are kept (the default status is not applied to a merge).
    again = await data_of(await upsert(api, tenant, name="Ann C", email="ann@example.com"), 200)
    assert again["status"] == "contacted" and again["phone"] is None


async def test_the_most_recently_created_lead_with_the_email_is_merged(api, tenant):
    await create_lead(api, tenant, email="dup@example.com", name="Old")
    newest = await create_lead(api, tenant, email="DUP@example.com", name="New")
    merged = await data_of(await upsert(api, tenant, name="Merged", email="dup@example.com"), 200)
    assert merged["id"] == newest["id"]


async def test_fifty_concurrent_upserts_of_a_new_email_leave_one_lead_with_every_change(
    api, tenant
):
    responses = await asyncio.gather(
        *(
            upsert(api, tenant, name="Zed", email="zed@example.com", metadata={f"k{i}": i})
            for i in range(50)
        )
    )
    statuses = sorted(resp.status for resp in responses)
    assert statuses == [200] * 49 + [201]
    listing = await data_of(await api.get(tenant.leads_url, headers=tenant.headers))
    assert listing["pagination"]["total"] == 1
    lead = await data_of(
        await api.get(tenant.lead_url(listing["leads"][0]["id"]), headers=tenant.headers)
    )
    assert lead["metadata"] == {f"k{i}": i for i in range(50)}


async def test_upsert_is_tenant_isolated(api, tenant, other_tenant):
    theirs = await create_lead(api, other_tenant, email="x@example.com")
    mine = await data_of(await upsert(api, tenant, name="Me", email="x@example.com"), 201)
    assert mine["id"] != theirs["id"]


async def test_bad_upsert_parameters_are_400(api, tenant):
    for query in ("?upsert=phone", "?upsert=email&upsert=email", "?other=1"):
        resp = await api.post(
            tenant.leads_url + query,
            json={"name": "A", "email": "a@example.com"},
            headers=tenant.headers,
        )
        await error_of(resp, 400, "VALIDATION_ERROR")
    listing = await data_of(await api.get(tenant.leads_url, headers=tenant.headers))
    assert listing["pagination"]["total"] == 0
