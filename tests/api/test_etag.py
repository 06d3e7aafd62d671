"""ETag, If-Match and If-None-Match on single leads."""

import asyncio

from .helpers import create_lead, data_of, error_of


async def test_every_single_lead_response_has_the_same_etag_until_it_changes(api, tenant):
    created = await api.post(
        tenant.leads_url, json={"name": "Ann", "email": "a@example.com"}, headers=tenant.headers
    )
    etag = created.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")
    url = tenant.lead_url((await data_of(created, 201))["id"])
    got = await api.get(url, headers=tenant.headers)
    assert got.headers["ETag"] == etag
    # A metadata change changes it; the PUT's tag is the one a later GET shows.
    put = await api.put(url, json={"metadata": {"a": 1}}, headers=tenant.headers)
    assert put.headers["ETag"] != etag
    assert (await api.get(url, headers=tenant.headers)).headers["ETag"] == put.headers["ETag"]


async def test_a_matching_if_none_match_is_304_without_a_body(api, tenant):
    lead = await create_lead(api, tenant)
    url = tenant.lead_url(lead["id"])
    etag = (await api.get(url, headers=tenant.headers)).headers["ETag"]
    resp = await api.get(url, headers={**tenant.headers, "If-None-Match": etag})
    assert resp.status == 304 and resp.headers["ETag"] == etag
    assert await resp.read() == b""
    other = await api.get(url, headers={**tenant.headers, "If-None-Match": '"nope"'})
    assert other.status == 200


async def test_a_stale_if_match_is_412_and_changes_nothing(api, tenant):
    lead = await create_lead(api, tenant)
    url = tenant.lead_url(lead["id"])
    stale = (await api.get(url, headers=tenant.headers)).headers["ETag"]
    await data_of(await api.put(url, json={"name": "B"}, headers=tenant.headers))
    before = await data_of(await api.get(url, headers=tenant.headers))
    h = {**tenant.headers, "If-Match": stale}
    await error_of(await api.put(url, json={"name": "C"}, headers=h), 412, "PRECONDITION_FAILED")
    await error_of(await api.delete(url + "?confirm=true", headers=h), 412, "PRECONDITION_FAILED")
    assert await data_of(await api.get(url, headers=tenant.headers)) == before


async def test_if_match_star_or_the_current_tag_lets_the_write_through(api, tenant):
    lead = await create_lead(api, tenant)
    url = tenant.lead_url(lead["id"])
    current = (await api.get(url, headers=tenant.headers)).headers["ETag"]
    resp = await api.put(url, json={"name": "B"}, headers={**tenant.headers, "If-Match": current})
    assert (await data_of(resp))["name"] == "B"
    resp = await api.put(url, json={"name": "C"}, headers={**tenant.headers, "If-Match": "*"})
    assert (await data_of(resp))["name"] == "C"
    weak = {**tenant.headers, "If-Match": "W/" + resp.headers["ETag"]}  # strong comparison
    await error_of(await api.put(url, json={"name": "D"}, headers=weak), 412, "PRECONDITION_FAILED")


async def test_two_writers_holding_one_etag_cannot_both_succeed(api, tenant):
    lead = await create_lead(api, tenant)
    url = tenant.lead_url(lead["id"])
    etag = (await api.get(url, headers=tenant.headers)).headers["ETag"]
    h = {**tenant.headers, "If-Match": etag}
    responses = await asyncio.gather(
        *(api.put(url, json={"metadata": {f"k{i}": i}}, headers=h) for i in range(10))
    )
    statuses = sorted(resp.status for resp in responses)
    assert statuses == [200] + [412] * 9
    stored = await data_of(await api.get(url, headers=tenant.headers))
    assert len(stored["metadata"]) == 1
