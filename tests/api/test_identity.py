"""Identity (contract v1.2): a lead's ``externalId``, unique within its chatbot and kept
unique by the store; ``phoneE164``, its phone as a number; and lists filtered by either."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest

from pollybot_leads.admin.commands import service_for
from pollybot_leads.admin.service import CLI
from pollybot_leads.leads.repository import leads_repo_key
from tests.conftest import Tenant, make_tenant

from .helpers import data_of, error_of


def body(**extra: Any) -> dict[str, Any]:
    tag = secrets.token_hex(4)
    return {"name": f"Person {tag}", "email": f"p.{tag}@example.com", **extra}


def ext() -> str:
    return f"crm-{secrets.token_hex(6)}"


async def create(api, tenant: Tenant, **fields: Any) -> Any:
    resp = await api.post(tenant.leads_url, json=body(**fields), headers=tenant.headers)
    return await data_of(resp, 201)


async def listed(api, tenant: Tenant, **params: str) -> list[dict[str, Any]]:
    page = await data_of(await api.get(tenant.leads_url, params=params, headers=tenant.headers))
    leads: list[dict[str, Any]] = page["leads"]
    assert page["pagination"]["total"] == len(leads)
    return leads


async def test_a_lead_carries_its_external_id_and_phone_in_e164(api, tenant):
    external = ext()
    lead = await create(api, tenant, externalId=external, phone="+1 (415) 555-2671")
    assert lead["externalId"] == external and lead["phone"] == "+1 (415) 555-2671"
    assert lead["phoneE164"] == "+14155552671"
    plain = await create(api, tenant, phone="415 555 2671")  # no + and no region
    assert plain["phoneE164"] is None and plain["externalId"] is None
    resp = await api.get(tenant.lead_url(lead["id"]), headers=tenant.headers)
    assert await data_of(resp) == lead
    changed = await data_of(
        await api.put(
            tenant.lead_url(lead["id"]), json={"phone": "+44 20 7946 0958"}, headers=tenant.headers
        )
    )
    assert changed["phoneE164"] == "+442079460958" and changed["externalId"] == external
    cleared = await data_of(
        await api.put(
            tenant.lead_url(lead["id"]),
            json={"phone": None, "externalId": None},
            headers=tenant.headers,
        )
    )
    assert cleared["phoneE164"] is None and cleared["externalId"] is None
    # Freed: another lead may take it now.
    assert (await create(api, tenant, externalId=external))["externalId"] == external


async def test_an_external_id_is_unique_within_its_chatbot_only(
    api, accounts, tenant, other_tenant
):
    external = ext()
    first = await create(api, tenant, externalId=external)
    resp = await api.post(tenant.leads_url, json=body(externalId=external), headers=tenant.headers)
    error = await error_of(resp, 409, "DUPLICATE_EXTERNAL_ID")
    assert error["details"] == {"externalId": [external]}
    second = await create(api, tenant)
    resp = await api.put(
        tenant.lead_url(second["id"]), json={"externalId": external}, headers=tenant.headers
    )
    await error_of(resp, 409, "DUPLICATE_EXTERNAL_ID")
    # Setting a lead's own id again is no conflict.
    resp = await api.put(
        tenant.lead_url(first["id"]), json={"externalId": external}, headers=tenant.headers
    )
    assert (await data_of(resp))["externalId"] == external
    # Another chatbot of the workspace, and another workspace, may use it.
    bot = await accounts.create_chatbot(workspace_id=tenant.workspace_id, name="Other")
    url = f"/api/v1/chatbots/{bot['id']}/leads"
    resp = await api.post(url, json=body(externalId=external), headers=tenant.headers)
    await data_of(resp, 201)
    assert (await create(api, other_tenant, externalId=external))["externalId"] == external
    assert [lead["id"] for lead in await listed(api, tenant, externalId=external)] == [first["id"]]
    resp = await api.get(tenant.lead_url(second["id"]), headers=tenant.headers)
    assert (await data_of(resp))["externalId"] is None  # the refused update changed nothing


async def test_a_batch_refuses_the_items_that_repeat_an_external_id(api, tenant):
    taken, fresh = ext(), ext()
    await create(api, tenant, externalId=taken)
    items = [body(externalId=fresh), body(externalId=fresh), body(externalId=taken), body()]
    resp = await api.post(
        tenant.leads_url + "/batch", json={"leads": items}, headers=tenant.headers
    )
    results = (await data_of(resp))["results"]
    assert [r["status"] for r in results] == [201, 409, 409, 201]
    assert {r["error"]["code"] for r in results if "error" in r} == {"DUPLICATE_EXTERNAL_ID"}
    assert len(await listed(api, tenant, externalId=fresh)) == 1


async def test_concurrent_creates_of_one_external_id_leave_one_lead(api, tenant):
    external = ext()

    async def attempt(n: int) -> int:
        for _ in range(5):
            resp = await api.post(
                tenant.leads_url, json=body(externalId=external), headers=tenant.headers
            )
            if resp.status != 503:
                return resp.status
            await asyncio.sleep(float(resp.headers["Retry-After"]))
        raise AssertionError("503 five times")

    statuses = await asyncio.gather(*(attempt(n) for n in range(20)))
    assert sorted(statuses) == [201] + [409] * 19
    assert len(await listed(api, tenant, externalId=external)) == 1


async def test_an_upsert_by_email_may_set_the_external_id(api, tenant):
    lead = await create(api, tenant)
    external = ext()
    resp = await api.post(
        tenant.leads_url + "?upsert=email",
        json={"name": lead["name"], "email": lead["email"], "externalId": external},
        headers=tenant.headers,
    )
    upserted = await data_of(resp)
    assert upserted["id"] == lead["id"] and upserted["externalId"] == external


async def test_lists_filter_by_phone_as_a_number_and_by_external_id(api, accounts):
    tenant = await make_tenant(accounts)
    a = await create(api, tenant, phone="+1 (415) 555-2671", externalId="a-1")
    b = await create(api, tenant, phone="+14155552671")
    c = await create(api, tenant, phone="(020) 7946 0958")
    await create(api, tenant, phone="+1 415 555 2672")
    found = await listed(api, tenant, phone="+1.415.555.2671")
    assert {lead["id"] for lead in found} == {a["id"], b["id"]}
    assert [lead["id"] for lead in await listed(api, tenant, phone="020-7946-0958")] == [c["id"]]
    assert [lead["id"] for lead in await listed(api, tenant, externalId="a-1")] == [a["id"]]
    assert await listed(api, tenant, externalId="A-1") == []  # exact
    both = await listed(api, tenant, externalId="a-1", phone="+14155552671")
    assert [lead["id"] for lead in both] == [a["id"]]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("externalId", ""),
        ("externalId", "   "),
        ("externalId", "x" * 256),
        ("externalId", "tab\there"),
        ("externalId", 42),
        ("externalId", {"$ne": None}),
        ("externalId", ["a"]),
        ("phoneE164", "+14155552671"),
    ],
)
async def test_a_bad_external_id_or_a_server_field_is_a_400_that_stores_nothing(
    api, tenant, field, value
):
    sent = body(**{field: value})
    resp = await api.post(tenant.leads_url, json=sent, headers=tenant.headers)
    error = await error_of(resp, 400, "VALIDATION_ERROR")
    assert field in error["details"]
    assert await listed(api, tenant, email=sent["email"]) == []


@pytest.mark.parametrize(
    "params",
    [{"externalId": ""}, {"externalId": "x" * 256}, {"phone": "call me"}, {"phone": "+" * 40}],
)
async def test_bad_identity_filters_are_a_400(api, tenant, params):
    resp = await api.get(tenant.leads_url, params=params, headers=tenant.headers)
    await error_of(resp, 400, "VALIDATION_ERROR")


# --- a chatbot's defaultRegion --------------------------------------------------------------


async def regional_tenant(accounts, region: str | None) -> Tenant:
    """A tenant whose chatbot reads phones without "+" in ``region``."""
    tenant = await make_tenant(accounts)
    bot = await accounts.create_chatbot(
        workspace_id=tenant.workspace_id, name="Regional", default_region=region
    )
    return Tenant(tenant.workspace_id, bot["id"], tenant.key_id, tenant.key)


async def test_a_chatbots_region_reads_its_national_numbers(api, accounts):
    us, plain = await regional_tenant(accounts, "US"), await regional_tenant(accounts, None)
    national = "(415) 555-2671"
    mine = await create(api, us, phone=national)
    assert mine["phone"] == national and mine["phoneE164"] == "+14155552671"
    assert (await create(api, plain, phone=national))["phoneE164"] is None
    # Lists, upserts and duplicates of the chatbot read it in its region too.
    assert [lead["id"] for lead in await listed(api, us, phone="415.555.2671")] == [mine["id"]]
    assert [lead["id"] for lead in await listed(api, us, phone="+14155552671")] == [mine["id"]]
    resp = await api.post(
        us.leads_url + "?upsert=phone", json=body(phone="415 555 2671"), headers=us.headers
    )
    assert (await data_of(resp, 200))["id"] == mine["id"]
    resp = await api.post(
        plain.leads_url + "?upsert=phone", json=body(phone="415 555 2671"), headers=plain.headers
    )
    error = await error_of(resp, 400, "VALIDATION_ERROR")
    assert "phone" in error["details"]
    # A number with its "+" reads the same anywhere.
    assert (await create(api, plain, phone="+44 20 7183 8750"))["phoneE164"] == "+442071838750"


async def test_a_changed_region_applies_to_numbers_written_from_then_on(api, accounts, mongo):
    gb = await regional_tenant(accounts, "GB")
    before = await create(api, gb, phone="020 7183 8750")
    assert before["phoneE164"] == "+442071838750"
    # The serving process's own service: its region cache is dropped at once.
    service = service_for(mongo, grace_seconds=1)
    service.leads = api.server.app[leads_repo_key]
    await service.update_chatbot(CLI, gb.chatbot_id, {"default_region": "DE"})
    after = await create(api, gb, phone="030 901820")
    assert after["phoneE164"] == "+4930901820"
    again = await data_of(await api.get(gb.lead_url(before["id"]), headers=gb.headers))
    assert again["phoneE164"] == "+442071838750"  # kept until the lead's phone is written


async def test_an_erasure_by_a_national_number_reads_it_in_each_chatbots_region(api, accounts):
    us = await regional_tenant(accounts, "US")
    lead = await create(api, us, phone="+1 415 555 0199")
    resp = await api.post(
        "/api/v1/privacy/erasures",
        json={"phone": "(415) 555-0199", "confirm": True},
        headers=us.headers,
    )
    assert (await data_of(resp))["leadIds"] == [lead["id"]]
