import asyncio
from datetime import UTC, datetime

import pytest

from .helpers import LEAD_ID, TS, create_lead, data_of, error_of


async def test_create_returns_the_whole_lead_with_location(api, tenant):
    before = datetime.now(UTC)
    resp = await api.post(
        tenant.leads_url,
        json={
            "name": "  John Doe ",
            "email": "john.doe@example.com",
            "phone": "+1-555-123-4567",
            "source": "website",
            "metadata": {"utm_source": "google", "interests": ["product_a"], "n": {"x": 1.5}},
        },
        headers=tenant.headers,
    )
    lead = await data_of(resp, 201)
    assert LEAD_ID.match(lead["id"])
    assert resp.headers["Location"] == tenant.lead_url(lead["id"])
    assert lead["chatbotId"] == tenant.chatbot_id
    assert lead["workspaceId"] == tenant.workspace_id
    assert lead["name"] == "John Doe"  # trimmed
    assert lead["email"] == "john.doe@example.com"
    assert lead["phone"] == "+1-555-123-4567"
    assert lead["source"] == "website"
    assert lead["status"] == "new"
    assert lead["metadata"] == {"utm_source": "google", "interests": ["product_a"], "n": {"x": 1.5}}
    assert TS.match(lead["createdAt"]) and lead["createdAt"] == lead["updatedAt"]
    created = datetime.strptime(lead["createdAt"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs((created - before).total_seconds()) < 5
    assert lead["statusHistory"] == [{"status": "new", "changedAt": lead["createdAt"]}]
    assert set(lead) == {
        "id",
        "chatbotId",
        "workspaceId",
        "name",
        "email",
        "phone",
        "phoneE164",
        "externalId",
        "source",
        "status",
        "metadata",
        "statusHistory",
        "createdAt",
        "updatedAt",
    }


async def test_optional_fields_default(api, tenant):
    lead = await create_lead(api, tenant)
    assert lead["phone"] is None and lead["source"] is None and lead["metadata"] == {}


async def test_initial_status_may_be_given(api, tenant):
    lead = await create_lead(api, tenant, status="qualified")
    assert lead["status"] == "qualified"
    assert [h["status"] for h in lead["statusHistory"]] == ["qualified"]


async def test_ids_are_unique(api, tenant):
    ids = {(await create_lead(api, tenant))["id"] for _ in range(20)}
    assert len(ids) == 20


async def test_metadata_types_round_trip_exactly(api, tenant):
    metadata = {
        "int": 3,
        "float": 2.5,
        "neg": -7,
        "big": 2**62,
        "bool": False,
        "none": None,
        "list": [1, "a", {"b": [True]}],
        "nested": {"a": {"b": {"c": "d"}}},
        "unicode": "Zoë ✓",
    }
    lead = await create_lead(api, tenant, metadata=metadata)
    resp = await api.get(tenant.lead_url(lead["id"]), headers=tenant.headers)
    assert (await data_of(resp))["metadata"] == metadata


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        ({}, {"name", "email"}),
        ({"name": "", "email": "a@b.co"}, {"name"}),
        ({"name": "   ", "email": "a@b.co"}, {"name"}),
        ({"name": "x" * 201, "email": "a@b.co"}, {"name"}),
        ({"name": "A", "email": "not-an-email"}, {"email"}),
        ({"name": "A", "email": ("a" * 250) + "@b.co"}, {"email"}),
        ({"name": "A", "email": "a@b.co", "phone": "call me"}, {"phone"}),
        ({"name": "A", "email": "a@b.co", "phone": "1" * 33}, {"phone"}),
        ({"name": "A", "email": "a@b.co", "source": ""}, {"source"}),
        ({"name": "A", "email": "a@b.co", "source": "s" * 65}, {"source"}),
        ({"name": "A", "email": "a@b.co", "status": "won"}, {"status"}),
        ({"name": "A", "email": "a@b.co", "metadata": []}, {"metadata"}),
        ({"name": "A", "email": "a@b.co", "metadata": "x"}, {"metadata"}),
        ({"name": 5, "email": ["a@b.co"]}, {"name", "email"}),
        ({"name": None, "email": None}, {"name", "email"}),
        ({"name": "A", "email": "a@b.co", "favourite": 1}, {"favourite"}),
        ({"name": "A", "email": "a@b.co", "id": "lead_0000000000000000"}, {"id"}),
        (
            {
                "name": "A",
                "email": "a@b.co",
                "chatbotId": "cb_1",
                "workspaceId": "ws_1",
                "createdAt": "2024-01-01T00:00:00.000Z",
                "updatedAt": "x",
                "statusHistory": [],
            },
            {"chatbotId", "workspaceId", "createdAt", "updatedAt", "statusHistory"},
        ),
    ],
)
async def test_every_bad_field_is_named(api, tenant, payload, fields):
    resp = await api.post(tenant.leads_url, json=payload, headers=tenant.headers)
    error = await error_of(resp, 400, "VALIDATION_ERROR")
    assert set(error["details"]) == fields
    listing = await api.get(tenant.leads_url, headers=tenant.headers)
    assert (await data_of(listing))["pagination"]["total"] == 0


@pytest.mark.parametrize(
    ("metadata", "path"),
    [
        ({"$where": 1}, "metadata.$where"),
        ({"a.b": 1}, "metadata.a.b"),
        ({"": 1}, "metadata."),
        ({"k" * 101: 1}, "metadata." + "k" * 101),
        ({"a": {"$gt": 1}}, "metadata.a.$gt"),
        ({"a\u0000b": 1}, "metadata.a\\u0000b"),
        ({f"k{i}": i for i in range(101)}, "metadata"),
        ({"a": {"b": {"c": {"d": {"e": {}}}}}}, "metadata.a.b.c.d.e"),
        ({"a": [[[[[1]]]]]}, "metadata.a[0][0][0][0]"),
        ({"blob": "x" * 17000}, "metadata"),
        ({"a": list(range(1001))}, "metadata"),  # filterable values
        ({f"k{i}": list(range(11)) for i in range(91)}, "metadata"),
    ],
)
async def test_metadata_limits_name_the_path(api, tenant, metadata, path):
    resp = await api.post(
        tenant.leads_url,
        json={"name": "A", "email": "a@b.co", "metadata": metadata},
        headers=tenant.headers,
    )
    error = await error_of(resp, 400, "VALIDATION_ERROR")
    assert path in error["details"], error["details"]


async def test_metadata_at_the_limits_is_accepted(api, tenant):
    metadata = {
        "deep": {"b": {"c": {"d": "five levels"}}},
        "wide": {f"k{i}": i for i in range(100)},
        "k" * 100: "long key",
    }
    lead = await create_lead(api, tenant, metadata=metadata)
    assert lead["metadata"] == metadata


async def test_filterable_metadata_values_are_limited_to_a_thousand(api, tenant):
    """Each top-level scalar and scalar element of a top-level array is a value a filter
    can match (an index entry): at most 1,000, each distinct value of a key once."""
    at_limit = {"a": list(range(998)), "b": "x", "c": True, "nested": {"d": list(range(500))}}
    lead = await create_lead(api, tenant, metadata=at_limit)
    assert lead["metadata"] == at_limit
    repeats = {"a": [*range(1000), 5, 5.0, 999], "long": "x" * 201}  # not counted
    assert (await create_lead(api, tenant, metadata=repeats))["metadata"] == repeats
    found = await api.get(
        tenant.leads_url, params={"metadata.a": "997", "limit": 100}, headers=tenant.headers
    )
    assert (await data_of(found))["pagination"]["total"] == 2
    over = {**at_limit, "e": 1}
    resp = await api.post(
        tenant.leads_url,
        json={"name": "A", "email": "over@b.co", "metadata": over},
        headers=tenant.headers,
    )
    error = await error_of(resp, 400, "VALIDATION_ERROR")
    (message,) = error["details"]["metadata"]
    assert "filterable values" in message and "1000" in message
    listing = await api.get(tenant.leads_url, params={"email": "over@b.co"}, headers=tenant.headers)
    assert (await data_of(listing))["pagination"]["total"] == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "a\u0000b"),
        ("name", "John\nDoe"),
        ("name", "tab\there"),
        ("name", "\u0085next line"),
        ("email", '"a\u0001b"@example.com'),
        ("source", "web\u007fsite"),
        ("source", "site\r"),
        ("phone", "+1 555\u0000"),
    ],
)
async def test_control_characters_are_refused_in_string_fields(api, tenant, field, value):
    payload = {"name": "A", "email": "a@b.co", field: value}
    resp = await api.post(tenant.leads_url, json=payload, headers=tenant.headers)
    error = await error_of(resp, 400, "VALIDATION_ERROR")
    assert set(error["details"]) == {field}
    listing = await api.get(tenant.leads_url, headers=tenant.headers)
    assert (await data_of(listing))["pagination"]["total"] == 0


async def test_control_characters_inside_metadata_values_are_kept(api, tenant):
    metadata = {"note": "line one\nline two\ttabbed\u0000nul", "list": ["\u0007"]}
    lead = await create_lead(api, tenant, metadata=metadata)
    assert lead["metadata"] == metadata


@pytest.mark.parametrize(
    ("field", "value"),
    [("name", " " * 195 + "x" * 6), ("source", " " + "s" * 64), ("phone", " " * 30 + "123")],
)
async def test_lengths_count_the_value_as_sent(api, tenant, field, value):
    payload = {"name": "A", "email": "a@b.co", field: value}
    resp = await api.post(tenant.leads_url, json=payload, headers=tenant.headers)
    error = await error_of(resp, 400, "VALIDATION_ERROR")
    assert set(error["details"]) == {field}


@pytest.mark.parametrize("field", ["name", "source"])
async def test_blank_values_are_refused(api, tenant, field):
    payload = {"name": "A", "email": "a@b.co", field: " \u00a0 "}
    resp = await api.post(tenant.leads_url, json=payload, headers=tenant.headers)
    error = await error_of(resp, 400, "VALIDATION_ERROR")
    assert set(error["details"]) == {field}


async def test_a_hundred_concurrent_creates_each_stored_once_and_counted(api, tenant):
    """Concurrent creates are committed in batches; each is answered with its own lead.

    Each is sent as a careful client would, with an Idempotency-Key, and retried with it
    after a 503 (a loaded machine can run a batch past the store budget): each lead is
    still stored once."""
    names = [f"Batch Lead {i}" for i in range(100)]

    async def create(i: int, name: str):
        headers = {**tenant.headers, "Idempotency-Key": f"concurrent-{tenant.chatbot_id}-{i}"}
        for _ in range(5):
            resp = await api.post(
                tenant.leads_url, json={"name": name, "email": f"b{i}@example.com"}, headers=headers
            )
            if resp.status != 503:
                return resp
            await asyncio.sleep(float(resp.headers["Retry-After"]))
        return resp

    responses = await asyncio.gather(*(create(i, name) for i, name in enumerate(names)))
    leads = [await data_of(resp, 201) for resp in responses]
    assert [lead["name"] for lead in leads] == names
    assert len({lead["id"] for lead in leads}) == 100
    for resp, lead in zip(responses, leads, strict=True):
        assert resp.headers["Location"].endswith("/" + lead["id"])
    page = await data_of(
        await api.get(tenant.leads_url, params={"limit": 100}, headers=tenant.headers)
    )
    assert page["pagination"]["total"] == 100
    assert {lead["id"] for lead in page["leads"]} == {lead["id"] for lead in leads}
