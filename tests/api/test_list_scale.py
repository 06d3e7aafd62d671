"""Behaviour that only shows with many leads or with writes racing the list."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from pollybot_leads.leads.queries import SORTS

from .helpers import create_lead, data_of


async def listing(api, tenant, **params):
    return await data_of(await api.get(tenant.leads_url, params=params, headers=tenant.headers))


@pytest.fixture
async def spread(api, tenant, mongo):
    """40 leads spread over ten years (several share a timestamp), newest first."""
    leads = [
        await create_lead(
            api,
            tenant,
            name=f"Person {i:02d}",
            email=f"p{i}@spread.io",
            status="new" if i % 3 else "lost",
        )
        for i in range(40)
    ]
    now = datetime.now(UTC).replace(microsecond=0)
    for i, lead in enumerate(leads):
        age = timedelta(minutes=7 * (i // 2) ** 3)  # pairs share a time; gaps grow to years
        await mongo.db["leads"].update_one(
            {"_id": lead["id"]}, {"$set": {"createdAt": now - age, "updatedAt": now - age / 2}}
        )
    return leads


def _expected(leads, mongo_docs, sort):
    field, direction = SORTS[sort]
    key = {"createdAt": "createdAt", "updatedAt": "updatedAt", "nameSort": "nameSort"}[field]
    docs = sorted(mongo_docs, key=lambda d: (d[key], d["_id"]), reverse=direction < 0)
    return [d["_id"] for d in docs]


@pytest.mark.parametrize("sort", ["-createdAt", "createdAt", "-updatedAt", "updatedAt"])
@pytest.mark.parametrize("status", [None, "new"])
async def test_pages_and_cursors_agree_with_a_full_sort(api, tenant, mongo, spread, sort, status):
    filter_ = {"chatbotId": tenant.chatbot_id, **({"status": status} if status else {})}
    docs = await mongo.db["leads"].find(filter_).to_list(None)
    expected = _expected(spread, docs, sort)
    extra = {"status": status} if status else {}
    by_page = []
    for page in range(1, 8):
        data = await listing(api, tenant, sort=sort, limit=7, page=page, **extra)
        assert data["pagination"]["total"] == len(expected)
        by_page += [x["id"] for x in data["leads"]]
    assert by_page == expected
    by_cursor, cursor = [], None
    while True:
        params = {"sort": sort, "limit": 3, **extra, **({"cursor": cursor} if cursor else {})}
        data = await listing(api, tenant, **params)
        by_cursor += [x["id"] for x in data["leads"]]
        cursor = data["pagination"]["nextCursor"]
        if not cursor:
            break
    assert by_cursor == expected


async def test_totals_stay_exact_through_concurrent_writes(api, tenant, mongo):
    leads = await asyncio.gather(*(create_lead(api, tenant) for _ in range(20)))
    changes = (
        [
            api.put(tenant.lead_url(lead["id"]), json={"status": s}, headers=tenant.headers)
            for lead, s in zip(leads[:10], ["lost", "contacted"] * 5, strict=True)
        ]
        + [
            api.delete(
                tenant.lead_url(lead["id"]), params={"confirm": "true"}, headers=tenant.headers
            )
            for lead in leads[10:15]
        ]
        + [
            api.put(
                tenant.lead_url(leads[0]["id"]),
                json={"status": "converted"},
                headers=tenant.headers,
            )
        ]
    )
    assert {r.status for r in await asyncio.gather(*changes)} == {200}
    for status in (None, "new", "lost", "contacted", "converted", "new,lost"):
        params = {"status": status} if status else {}
        total = (await listing(api, tenant, **params))["pagination"]["total"]
        query = {"chatbotId": tenant.chatbot_id}
        if status:
            query["status"] = {"$in": status.split(",")}
        assert total == await mongo.db["leads"].count_documents(query), status


async def test_metadata_filters_see_every_concurrent_merge(api, tenant):
    lead = await create_lead(api, tenant, metadata={"keep": "yes"})
    await asyncio.gather(
        *(
            api.put(
                tenant.lead_url(lead["id"]),
                json={"metadata": {f"k{i}": f"v{i}"}},
                headers=tenant.headers,
            )
            for i in range(30)
        )
    )
    await api.put(
        tenant.lead_url(lead["id"]),
        json={"metadata": {"k3": None, "keep": 7}},
        headers=tenant.headers,
    )
    for key, value, found in (
        ("k0", "v0", 1),
        ("k29", "v29", 1),
        ("k3", "v3", 0),
        ("keep", "7", 1),
        ("keep", "yes", 0),
    ):
        data = await listing(api, tenant, **{f"metadata.{key}": value})
        assert data["pagination"]["total"] == found, (key, value)


async def test_two_word_search_pages_like_one_word(api, tenant):
    for i in range(12):
        await create_lead(api, tenant, name=f"Joan Garcia{i}", email=f"j{i}@x.io")
        await create_lead(api, tenant, name=f"Joan Other{i}", email=f"o{i}@x.io")
    first = await listing(api, tenant, search="garcia joan", limit=5)
    assert first["pagination"]["total"] == 12
    seen = [x["id"] for x in first["leads"]]
    second = await listing(api, tenant, search="garcia joan", limit=5, page=2)
    cursor_page = await listing(
        api, tenant, search="garcia joan", limit=5, cursor=first["pagination"]["nextCursor"]
    )
    assert [x["id"] for x in second["leads"]] == [x["id"] for x in cursor_page["leads"]]
    seen += [x["id"] for x in second["leads"]]
    assert len(set(seen)) == 10
    assert all(x["name"].startswith("Joan Garcia") for x in first["leads"] + second["leads"])


async def test_a_deployment_can_bound_counting(settings, mongo, accounts):
    from aiohttp.test_utils import TestClient, TestServer

    from pollybot_leads.app import create_app

    from ..conftest import make_tenant

    tenant = await make_tenant(accounts)
    client = TestClient(TestServer(create_app(settings.replace(list_max_count=5))))
    await client.start_server()
    try:
        for i in range(7):
            await create_lead(client, tenant, source="web", email=f"b{i}@x.io")
        bounded = await listing(client, tenant, search="b", limit=2)  # counted: bounded
        assert bounded["pagination"]["total"] == 5
        assert bounded["pagination"]["totalExact"] is False
        assert bounded["pagination"]["hasNext"] is True
        for counted in ({}, {"source": "web"}, {"status": "new", "source": "web"}):
            exact = await listing(client, tenant, limit=2, **counted)  # counters: exact
            assert exact["pagination"]["total"] == 7 and "totalExact" not in exact["pagination"]
        few = await listing(client, tenant, source="web", search="b1")
        assert few["pagination"]["total"] == 1 and "totalExact" not in few["pagination"]
    finally:
        await client.close()
