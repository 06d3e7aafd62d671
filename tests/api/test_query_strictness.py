"""Query parameters read one way only (issue 19, items 4 to 6): integers in ASCII digits,
no control characters in metadata filters, and every 64-bit integer filter exact."""

from __future__ import annotations

import pytest
from yarl import URL

from .helpers import create_lead, data_of, error_of

# As a client would send them, percent-encoded where they are not plain ASCII.
NOT_CANONICAL = [
    "%E0%A5%A7",  # a Devanagari one
    "%EF%BC%92",  # a full-width two
    "%D9%A1",  # an Arabic-Indic one
    "1_0",
    "+1",  # a space, once the query string is decoded
    "%2B1",  # a plus sign
    "%201",
    "1%20",
    "%091",
    "-0",
    "01",
    "0x1",
    "1e1",
    "1.0",
    "",
]


async def get(api, tenant, path: str, query: str):
    """GET ``path?query`` with the query string sent exactly as written."""
    url = URL(f"{path}?{query}", encoded=True)
    return await api.get(url, headers=tenant.headers)


async def refused_naming(resp, name: str) -> dict:
    error = await error_of(resp, 400, "VALIDATION_ERROR")
    assert list(error["details"]) == [name], error
    return error


@pytest.mark.parametrize("value", NOT_CANONICAL)
async def test_list_page_and_limit_take_ascii_digits_only(api, tenant, value):
    for name in ("page", "limit"):
        resp = await get(api, tenant, tenant.leads_url, f"{name}={value}")
        await refused_naming(resp, name)


@pytest.mark.parametrize("value", NOT_CANONICAL)
async def test_feed_after_and_limit_take_ascii_digits_only(api, tenant, value):
    url = f"/api/v1/chatbots/{tenant.chatbot_id}/events"
    for name in ("after", "limit"):
        await refused_naming(await get(api, tenant, url, f"{name}={value}"), name)


@pytest.mark.parametrize("value", NOT_CANONICAL)
async def test_delivery_log_limit_takes_ascii_digits_only(api, tenant, value):
    resp = await api.post(
        "/api/v1/webhooks", json={"url": "https://example.com/hook"}, headers=tenant.headers
    )
    webhook = await data_of(resp, 201)
    url = f"/api/v1/webhooks/{webhook['id']}/deliveries"
    await refused_naming(await get(api, tenant, url, f"limit={value}"), "limit")


async def test_canonical_integers_still_work_and_ranges_are_named(api, tenant):
    await create_lead(api, tenant)
    page = await data_of(await get(api, tenant, tenant.leads_url, "page=1&limit=100"))
    assert page["pagination"]["page"] == 1 and page["pagination"]["limit"] == 100
    feed = f"/api/v1/chatbots/{tenant.chatbot_id}/events"
    events = await data_of(await get(api, tenant, feed, "after=0&limit=1"))
    assert events["pagination"]["after"] == 0 and events["pagination"]["limit"] == 1
    error = await refused_naming(await get(api, tenant, tenant.leads_url, "limit=101"), "limit")
    assert "100" in error["details"]["limit"][0]
    error = await refused_naming(
        await get(api, tenant, tenant.leads_url, "page=" + "9" * 5000), "page"
    )
    assert "1000000" in error["details"]["page"][0]


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("metadata.a%00b=1", "metadata.a\x00b"),
        ("metadata.ctl=a%00%01b", "metadata.ctl"),
        ("metadata.ctl=%7F", "metadata.ctl"),
        ("metadata.ctl=%C2%85", "metadata.ctl"),  # U+0085, a C1 control
        ("metadata.tab%09=x", "metadata.tab\t"),
        ("metadata.nl=a%0Ab", "metadata.nl"),
    ],
)
async def test_control_characters_in_metadata_filters_are_refused(api, tenant, query, named):
    await refused_naming(await get(api, tenant, tenant.leads_url, query), named)
    export = await get(api, tenant, tenant.leads_url + "/export", query)
    await refused_naming(export, named)


async def test_every_64_bit_integer_filter_matches_exactly(api, tenant, other_tenant):
    values = {
        "nineteen": 1234567890123456789,
        "rounded": 1234567890123456768,  # what the one above becomes as a float
        "max": 2**63 - 1,
        "min": -(2**63),
    }
    mine = {
        key: await create_lead(api, tenant, email=f"{key}@example.com", metadata={"n": value})
        for key, value in values.items()
    }
    for key, value in values.items():  # the same values in another workspace
        await create_lead(api, other_tenant, email=f"{key}@example.com", metadata={"n": value})
    texts = await create_lead(
        api,
        tenant,
        email="texts@example.com",
        metadata={"n": ["12345678901234567890123", "9223372036854775808"], "f": 1e20},
    )

    async def matching(query: str) -> list[str]:
        data = await data_of(await get(api, tenant, tenant.leads_url, query))
        return [lead["id"] for lead in data["leads"]]

    for key, value in values.items():
        assert await matching(f"metadata.n={value}") == [mine[key]["id"]], key
    # Beyond 64 bits no integer is stored: the string matches, and a float exactly equal.
    assert await matching("metadata.n=12345678901234567890123") == [texts["id"]]
    assert await matching("metadata.n=9223372036854775808") == [texts["id"]]
    assert await matching("metadata.f=100000000000000000000") == [texts["id"]]
    assert await matching("metadata.n=-9223372036854775809") == []
    too_big = await api.post(
        tenant.leads_url,
        data='{"name": "N", "email": "n@example.com", "metadata": {"n": 9223372036854775808}}',
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    await error_of(too_big, 400, "INVALID_JSON")
