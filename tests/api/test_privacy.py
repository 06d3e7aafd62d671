"""Erasure and suppression (contract v1.2, ``/api/v1/privacy/…``): one call erases a
person by email or phone from every chatbot of the key's workspace, as ``DELETE`` would
(a scan of every collection finds none of their values after), and a suppression keeps
them from being captured again, kept as a keyed hash, never the address.

The tests run on a database of their own, so that each scan reads every document of
every collection, not the whole session's.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from pollybot_leads.accounts.repository import AccountRepository
from pollybot_leads.leads.repository import PHONE_KEYS, LeadRepository
from tests.conftest import Tenant, make_tenant, own_database
from tests.store_scan import collections_of, copies_in_store, person, values_of

from .helpers import data_of, error_of

settings, mongo, accounts, api = own_database("privacy")

ERASURES = "/api/v1/privacy/erasures"
SUPPRESSIONS = "/api/v1/privacy/suppressions"


def leads_url(chatbot_id: str) -> str:
    return f"/api/v1/chatbots/{chatbot_id}/leads"


@pytest.fixture
async def two_bots(accounts: AccountRepository) -> tuple[Tenant, str]:
    """A workspace with two chatbots (the tenant's, and the second's id)."""
    tenant = await make_tenant(accounts)
    second = await accounts.create_chatbot(workspace_id=tenant.workspace_id, name="Second")
    return tenant, second["id"]


@pytest.fixture
async def stranger(accounts: AccountRepository) -> Tenant:
    return await make_tenant(accounts)


async def create(api: TestClient, tenant: Tenant, body: dict[str, Any], chatbot: str = "") -> Any:
    url = leads_url(chatbot or tenant.chatbot_id)
    return await data_of(await api.post(url, json=body, headers=tenant.headers), 201)


async def erase(api: TestClient, tenant: Tenant, **body: Any) -> Any:
    resp = await api.post(ERASURES, json={"confirm": True, **body}, headers=tenant.headers)
    return await data_of(resp)


async def events_of(api: TestClient, tenant: Tenant, chatbot: str) -> list[dict[str, Any]]:
    url = f"/api/v1/chatbots/{chatbot}/events"
    page = await data_of(await api.get(url, params={"limit": "100"}, headers=tenant.headers))
    events: list[dict[str, Any]] = page["events"]
    return events


async def test_an_email_is_erased_from_every_chatbot_of_the_workspace_and_nowhere_else(
    api, mongo, two_bots, stranger
):
    tenant, second = two_bots
    body = person()
    first = await create(api, tenant, body)
    # The same person in the second chatbot, the email in another case and renamed.
    other_form = {**person(), "email": body["email"].upper(), "phone": body["phone"]}
    again = await create(api, tenant, other_form, second)
    resp = await api.put(
        tenant.lead_url(first["id"]), json={"status": "contacted"}, headers=tenant.headers
    )
    await data_of(resp)
    kept = await create(api, tenant, person())  # another person of the workspace
    theirs = await create(api, stranger, {**person(), "email": body["email"]})

    done = await erase(api, tenant, email=body["email"].title())
    assert done["erased"] == 2 and done["suppressed"] is False
    assert sorted(done["leadIds"]) == sorted([first["id"], again["id"]])
    for chatbot, lead in ((tenant.chatbot_id, first), (second, again)):
        resp = await api.get(f"{leads_url(chatbot)}/{lead['id']}", headers=tenant.headers)
        await error_of(resp, 404, "LEAD_NOT_FOUND")
        events = await events_of(api, tenant, chatbot)
        mine = [e for e in events if e["data"]["lead"]["id"] == lead["id"]]
        assert mine[-1]["type"] == "lead.deleted"
        assert mine[-1]["data"] == {"lead": {"id": lead["id"]}, "reason": "erasure"}
        assert all(e["data"].get("redacted") for e in mine[:-1]), mine
    values = [*values_of(body), *values_of(other_form)[:1], *values_of(other_form)[3:]]
    found = await copies_in_store(mongo.db, values)
    # Only the other workspace's lead (same email) keeps a copy: in its own records.
    assert found, "the scan sees the other workspace's copy"
    for copy in found:
        assert copy.doc.get("workspaceId", stranger.workspace_id) == stranger.workspace_id, copy
    resp = await api.get(tenant.lead_url(kept["id"]), headers=tenant.headers)
    assert (await data_of(resp))["id"] == kept["id"]
    resp = await api.get(stranger.lead_url(theirs["id"]), headers=stranger.headers)
    assert await data_of(resp) == theirs
    audit = await mongo.db["audit_log"].find_one({"leadId": first["id"]})
    assert audit["reason"] == "erasure" and audit["workspaceId"] == tenant.workspace_id
    listing = await data_of(await api.get(tenant.leads_url, headers=tenant.headers))
    assert listing["pagination"]["total"] == 1  # the counters moved with the deletions


async def test_a_phone_is_compared_as_a_number_and_else_by_its_digits(api, mongo, two_bots):
    tenant, second = two_bots
    digits = f"{secrets.randbelow(10**8):08d}"
    international = person(phone=f"+44 20 {digits[:4]} {digits[4:]}")
    same_number = person(phone=f"+442{0}{digits}")
    local = person(phone=f"(020) {digits}")  # no +: no region to parse it by, so digits
    other = person(phone=f"+44 20 {digits[:4]} {digits[4:7]}9" if digits[7] != "9" else "+1 1")
    a = await create(api, tenant, international)
    b = await create(api, tenant, same_number, second)
    c = await create(api, tenant, local)
    d = await create(api, tenant, other)

    done = await erase(api, tenant, phone=f"+44-20-{digits[:4]}-{digits[4:]}")
    assert sorted(done["leadIds"]) == sorted([a["id"], b["id"]])
    done = await erase(api, tenant, phone=f"020 {digits[:4]} {digits[4:]}")
    assert done["leadIds"] == [c["id"]]
    resp = await api.get(tenant.lead_url(d["id"]), headers=tenant.headers)
    assert (await data_of(resp))["phone"] == other["phone"]
    erased = [*values_of(international), *values_of(same_number), *values_of(local)]
    assert await copies_in_store(mongo.db, erased) == []


async def test_a_suppressed_address_is_not_captured_again_until_lifted(
    api, mongo, two_bots, stranger
):
    tenant, second = two_bots
    body = person()
    await create(api, tenant, body)
    done = await erase(api, tenant, email=body["email"], suppress=True)
    assert done["erased"] == 1 and done["suppressed"] is True

    again = {**person(), "email": body["email"].upper()}
    resp = await api.post(tenant.leads_url, json=again, headers=tenant.headers)
    await error_of(resp, 422, "SUPPRESSED")
    resp = await api.post(leads_url(second) + "?upsert=email", json=again, headers=tenant.headers)
    await error_of(resp, 422, "SUPPRESSED")
    fine = person()
    batch = {"leads": [fine, again]}
    resp = await api.post(tenant.leads_url + "/batch", json=batch, headers=tenant.headers)
    results = (await data_of(resp))["results"]
    assert results[0]["status"] == 201 and results[0]["lead"]["email"] == fine["email"]
    assert results[1]["status"] == 422 and results[1]["error"]["code"] == "SUPPRESSED"
    # Another workspace may capture the same address.
    await create(api, stranger, again)
    # Nothing of the refused ones was stored, and the suppression keeps no address.
    found = await copies_in_store(mongo.db, [again["name"], again["email"]])
    assert {copy.doc.get("workspaceId") for copy in found} == {stranger.workspace_id}, found
    assert "suppressions" not in collections_of(await copies_in_store(mongo.db, [body["email"]]))

    page = await data_of(await api.get(SUPPRESSIONS, headers=tenant.headers))
    (item,) = page["suppressions"]
    assert set(item) == {"id", "kind", "createdAt"} and item["kind"] == "email"
    assert page["pagination"] == {"limit": 100, "hasMore": False, "nextAfter": None}
    theirs = await data_of(await api.get(SUPPRESSIONS, headers=stranger.headers))
    assert theirs["suppressions"] == []
    # Another workspace cannot lift it.
    resp = await api.delete(f"{SUPPRESSIONS}/{item['id']}", headers=stranger.headers)
    await error_of(resp, 404, "SUPPRESSION_NOT_FOUND")
    resp = await api.post(tenant.leads_url, json=again, headers=tenant.headers)
    await error_of(resp, 422, "SUPPRESSED")
    resp = await api.delete(f"{SUPPRESSIONS}/{item['id']}", headers=tenant.headers)
    assert await data_of(resp) == {"id": item["id"], "deleted": True}
    await create(api, tenant, again)
    resp = await api.delete(f"{SUPPRESSIONS}/{item['id']}", headers=tenant.headers)
    await error_of(resp, 404, "SUPPRESSION_NOT_FOUND")


async def test_a_suppressed_phone_is_refused_in_any_format(api, two_bots):
    tenant, _ = two_bots
    digits = f"{secrets.randbelow(10**8):08d}"
    done = await erase(api, tenant, phone=f"+1 (415) {digits[:3]}-{digits[3:7]}", suppress=True)
    assert done == {"erased": 0, "leadIds": [], "suppressed": True}
    resp = await api.post(
        tenant.leads_url,
        json=person(phone=f"+1415{digits[:7]}"),
        headers=tenant.headers,
    )
    await error_of(resp, 422, "SUPPRESSED")
    await create(api, tenant, person(phone=f"+1415{digits[:6]}{(int(digits[6]) + 1) % 10}"))
    page = await data_of(await api.get(SUPPRESSIONS, headers=tenant.headers))
    assert [item["kind"] for item in page["suppressions"]] == ["phone"]


async def test_creates_racing_a_suppressing_erasure_leave_no_lead_behind(api, two_bots):
    tenant, second = two_bots
    email = person()["email"]

    async def capture(n: int) -> int:
        body = person(email=email.upper() if n % 2 else email)
        for _ in range(5):
            url = leads_url(second if n % 3 else tenant.chatbot_id)
            resp = await api.post(url, json=body, headers=tenant.headers)
            if resp.status != 503:
                return resp.status
            await asyncio.sleep(float(resp.headers["Retry-After"]))
        raise AssertionError("503 five times")

    racers = [asyncio.ensure_future(capture(n)) for n in range(30)]
    await asyncio.sleep(0.05)
    done = await erase(api, tenant, email=email, suppress=True)
    statuses = await asyncio.gather(*racers)
    assert set(statuses) <= {201, 422}
    # What was created before the erasure's transaction of its chatbot was erased by it;
    # nothing was created after.
    for chatbot in (tenant.chatbot_id, second):
        listing = await data_of(
            await api.get(leads_url(chatbot), params={"email": email}, headers=tenant.headers)
        )
        assert listing["leads"] == [], (chatbot, done, statuses)
    assert done["erased"] == statuses.count(201)


async def test_an_erasure_takes_as_many_transactions_as_it_needs(api, mongo, two_bots):
    tenant, second = two_bots
    email = person()["email"]
    created = []
    for chatbot, count in ((tenant.chatbot_id, 230), (second, 20)):
        for start in range(0, count, 100):
            items = [person(email=email) for _ in range(min(100, count - start))]
            resp = await api.post(
                leads_url(chatbot) + "/batch", json={"leads": items}, headers=tenant.headers
            )
            created += [r["lead"]["id"] for r in (await data_of(resp))["results"]]
    key = {"Idempotency-Key": str(uuid.uuid4())}
    body = {"email": email, "confirm": True}
    resp = await api.post(ERASURES, json=body, headers={**tenant.headers, **key})
    done = await data_of(resp)
    assert done["erased"] == 250 and sorted(done["leadIds"]) == sorted(created)
    assert await mongo.db["leads"].count_documents({"emailFolded": email}) == 0
    # The same key answers the same, erasing nothing more.
    resp = await api.post(ERASURES, json=body, headers={**tenant.headers, **key})
    assert resp.headers["Idempotent-Replayed"] == "true"
    assert await data_of(resp) == done


async def test_leads_from_before_phone_keys_are_found_once_filled_in(api, mongo, two_bots):
    tenant, _ = two_bots
    body = person()
    lead = await create(api, tenant, body)
    # As a release before phone keys left it.
    await mongo.db["leads"].update_one({"_id": lead["id"]}, {"$unset": {"phoneKey": ""}})
    await mongo.db["migrations"].delete_one({"_id": PHONE_KEYS})
    assert await LeadRepository(mongo).fill_phone_keys() >= 1
    assert await LeadRepository(mongo).fill_phone_keys() == 0  # once per database
    done = await erase(api, tenant, phone=body["phone"].replace(" ", ""))
    assert done["leadIds"] == [lead["id"]]


BAD_ERASURES = [
    ({"email": "a@example.com"}, 400, "CONFIRMATION_REQUIRED"),
    ({"email": "a@example.com", "confirm": False}, 400, "CONFIRMATION_REQUIRED"),
    ({"email": "a@example.com", "confirm": "true"}, 400, "VALIDATION_ERROR"),
    ({"email": "a@example.com", "confirm": 1}, 400, "VALIDATION_ERROR"),
    ({"confirm": True}, 400, "VALIDATION_ERROR"),
    ({"email": "a@example.com", "phone": "+1 415", "confirm": True}, 400, "VALIDATION_ERROR"),
    ({"email": "not an email", "confirm": True}, 400, "VALIDATION_ERROR"),
    ({"email": None, "confirm": True}, 400, "VALIDATION_ERROR"),
    ({"phone": "call me", "confirm": True}, 400, "VALIDATION_ERROR"),
    ({"phone": {"$ne": None}, "confirm": True}, 400, "VALIDATION_ERROR"),
    ({"email": {"$regex": ".*"}, "confirm": True}, 400, "VALIDATION_ERROR"),
    ({"email": "a@example.com", "confirm": True, "suppress": "yes"}, 400, "VALIDATION_ERROR"),
    ({"email": "a@example.com", "confirm": True, "chatbotId": "x"}, 400, "VALIDATION_ERROR"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_ERASURES)
async def test_a_bad_erasure_is_refused_and_changes_nothing(
    api, mongo, two_bots, body, status, code
):
    tenant, _ = two_bots
    victim = person(email="a@example.com", phone="+1 415")
    lead = await create(api, tenant, victim)
    before = await copies_in_store(mongo.db, values_of(victim))
    resp = await api.post(ERASURES, json=body, headers=tenant.headers)
    await error_of(resp, status, code)
    assert await copies_in_store(mongo.db, values_of(victim)) == before
    resp = await api.get(tenant.lead_url(lead["id"]), headers=tenant.headers)
    assert (await data_of(resp))["id"] == lead["id"]
    page = await data_of(await api.get(SUPPRESSIONS, headers=tenant.headers))
    assert page["suppressions"] == []


async def test_bad_requests_of_the_privacy_routes_are_4xx_in_the_envelope(api, two_bots):
    tenant, _ = two_bots
    body = {"email": "a@example.com", "confirm": True}
    cases = [
        (api.post(ERASURES + "?confirm=true", json=body, headers=tenant.headers), 400),
        (
            api.post(
                ERASURES, data="{", headers={**tenant.headers, "Content-Type": "application/json"}
            ),
            400,
        ),
        (
            api.post(ERASURES, data="x", headers={**tenant.headers, "Content-Type": "text/plain"}),
            415,
        ),
        (api.post(ERASURES, json=body), 401),
        (
            api.post(
                ERASURES, json=body, headers={"Authorization": "Bearer sk-workspace_" + "x" * 40}
            ),
            401,
        ),
        (api.get(SUPPRESSIONS, params={"limit": "0"}, headers=tenant.headers), 400),
        (api.get(SUPPRESSIONS, params={"limit": "1001"}, headers=tenant.headers), 400),
        (
            api.get(
                SUPPRESSIONS, params={"after": "lead_0123456789abcdef"}, headers=tenant.headers
            ),
            400,
        ),
        (api.get(SUPPRESSIONS, params={"bogus": "1"}, headers=tenant.headers), 400),
        (api.delete(SUPPRESSIONS + "/sup_0123456789abcdef", headers=tenant.headers), 404),
        (api.delete(SUPPRESSIONS + "/%7B%22$ne%22:null%7D", headers=tenant.headers), 404),
        (api.delete(SUPPRESSIONS + "/sup_0123456789abcdef?x=1", headers=tenant.headers), 400),
        (api.put(ERASURES, json=body, headers=tenant.headers), 405),
    ]
    for call, status in cases:
        resp = await call
        assert resp.status == status, (resp.url, await resp.text())
        assert (await resp.json())["success"] is False


async def test_suppressions_are_paged_by_id(api, two_bots):
    tenant, _ = two_bots
    for _ in range(3):
        await erase(api, tenant, email=person()["email"], suppress=True)
    first = await data_of(
        await api.get(SUPPRESSIONS, params={"limit": "2"}, headers=tenant.headers)
    )
    assert len(first["suppressions"]) == 2 and first["pagination"]["hasMore"] is True
    after = first["pagination"]["nextAfter"]
    rest = await data_of(
        await api.get(SUPPRESSIONS, params={"limit": "2", "after": after}, headers=tenant.headers)
    )
    assert len(rest["suppressions"]) == 1 and rest["pagination"]["nextAfter"] is None
    ids = [s["id"] for s in first["suppressions"] + rest["suppressions"]]
    assert ids == sorted(ids) and len(set(ids)) == 3
