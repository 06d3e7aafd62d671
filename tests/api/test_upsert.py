"""POST …/leads?upsert=email (phone, externalId): create, or merge into the newest lead
with that email (phone number, external id)."""

import asyncio
import re

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


async def test_upsert_guards_keep_no_email_in_the_clear(api, tenant, other_tenant, mongo):
    """A guard is kept an hour, past the lead it guarded: its id is a keyed hash."""
    for who in (tenant, other_tenant):
        await data_of(await upsert(api, who, name="Gus", email="Gus.Guard@Example.com"), 201)
    batch = {"upsert": "email", "leads": [{"name": "Hal", "email": "hal.guard@example.com"}]}
    resp = await api.post(tenant.leads_url + "/batch", json=batch, headers=tenant.headers)
    assert (await data_of(resp))["created"] == 1
    hashes = []
    for who in (tenant, other_tenant):
        prefix = {"$regex": "^" + re.escape(who.chatbot_id + ":")}
        ids = [doc["_id"] async for doc in mongo.db["upsert_guards"].find({"_id": prefix})]
        for guard_id in ids:
            assert re.fullmatch(re.escape(who.chatbot_id) + ":[0-9a-f]{64}", guard_id)
            assert "guard" not in guard_id.lower() and "@" not in guard_id
        hashes.append({guard_id.split(":")[1] for guard_id in ids})
    assert len(hashes[0]) == 2 and len(hashes[1]) == 1
    assert not hashes[0] & hashes[1]  # one address, unrelated ids in different chatbots
    # And the guard still does its work: the upserts of one email find one lead.
    again = await data_of(await upsert(api, tenant, name="Gus", email="gus.guard@example.com"))
    assert again["email"] == "gus.guard@example.com"
    listing = await data_of(
        await api.get(
            tenant.leads_url, params={"email": "GUS.GUARD@example.com"}, headers=tenant.headers
        )
    )
    assert listing["pagination"]["total"] == 1


async def test_upsert_is_tenant_isolated(api, tenant, other_tenant):
    theirs = await create_lead(api, other_tenant, email="x@example.com")
    mine = await data_of(await upsert(api, tenant, name="Me", email="x@example.com"), 201)
    assert mine["id"] != theirs["id"]


async def test_bad_upsert_parameters_are_400(api, tenant):
    for query in ("?upsert=fax", "?upsert=email&upsert=email", "?other=1"):
        resp = await api.post(
            tenant.leads_url + query,
            json={"name": "A", "email": "a@example.com"},
            headers=tenant.headers,
        )
        await error_of(resp, 400, "VALIDATION_ERROR")
    listing = await data_of(await api.get(tenant.leads_url, headers=tenant.headers))
    assert listing["pagination"]["total"] == 0


async def test_a_deletion_removes_the_upsert_guard_of_its_email(api, tenant, mongo):
    """A guard is kept an hour past its upsert: the lead's deletion takes it away."""
    lead = await data_of(await upsert(api, tenant, name="G", email="Guarded@Example.com"), 201)
    guards = mongo.db["upsert_guards"]
    mine = {"_id": {"$gte": f"{tenant.chatbot_id}:", "$lt": f"{tenant.chatbot_id};"}}
    assert await guards.count_documents(mine) == 1
    resp = await api.delete(
        tenant.lead_url(lead["id"]), params={"confirm": "true"}, headers=tenant.headers
    )
    await data_of(resp)
    assert await guards.count_documents(mine) == 0
    # Upserts of the email work as before: a new lead, guarded again.
    again = await data_of(await upsert(api, tenant, name="G", email="guarded@example.com"), 201)
    assert again["id"] != lead["id"] and await guards.count_documents(mine) == 1


# --- by phone and by external id ---------------------------------------------------------

PHONE_FORMS = ["+1 (415) 555-2671", "+14155552671", "+1-415-555-2671", "+1 415 555 2671"]


async def upsert_on(api, tenant, on, **fields):
    return await api.post(tenant.leads_url + f"?upsert={on}", json=fields, headers=tenant.headers)


async def test_an_upsert_by_phone_matches_the_number_whatever_its_format(api, tenant):
    first = await data_of(
        await upsert_on(
            api, tenant, "phone", name="P", email="p1@example.com", phone=PHONE_FORMS[0]
        ),
        201,
    )
    assert first["phoneE164"] == "+14155552671"
    for form in PHONE_FORMS[1:]:
        merged = await data_of(
            await upsert_on(api, tenant, "phone", name="P", email="p2@example.com", phone=form), 200
        )
        assert merged["id"] == first["id"] and merged["phone"] == form
    # Another number is another lead; the same number in another tenant too.
    other = await upsert_on(
        api, tenant, "phone", name="Q", email="q@example.com", phone="+14155550000"
    )
    assert (await data_of(other, 201))["id"] != first["id"]


async def test_fifty_concurrent_upserts_of_a_new_phone_in_different_forms_leave_one_lead(
    api, tenant
):
    responses = await asyncio.gather(
        *(
            upsert_on(
                api,
                tenant,
                "phone",
                name="Zed",
                email="zed.phone@example.com",
                phone=PHONE_FORMS[i % len(PHONE_FORMS)],
                metadata={f"k{i}": i},
            )
            for i in range(50)
        )
    )
    assert sorted(resp.status for resp in responses) == [200] * 49 + [201]
    listing = await data_of(await api.get(tenant.leads_url, headers=tenant.headers))
    assert listing["pagination"]["total"] == 1
    lead = await data_of(
        await api.get(tenant.lead_url(listing["leads"][0]["id"]), headers=tenant.headers)
    )
    assert lead["metadata"] == {f"k{i}": i for i in range(50)}


async def test_fifty_concurrent_upserts_of_a_new_external_id_leave_one_lead(api, tenant):
    responses = await asyncio.gather(
        *(
            upsert_on(
                api,
                tenant,
                "externalId",
                name="Ext",
                email=f"ext{i}@example.com",
                externalId="crm-42",
                metadata={f"k{i}": i},
            )
            for i in range(50)
        )
    )
    assert sorted(resp.status for resp in responses) == [200] * 49 + [201]
    found = await data_of(
        await api.get(tenant.leads_url, params={"externalId": "crm-42"}, headers=tenant.headers)
    )
    assert found["pagination"]["total"] == 1
    assert found["leads"][0]["metadata"] == {f"k{i}": i for i in range(50)}


async def test_an_upsert_without_what_it_matches_on_is_400_and_creates_nothing(api, tenant):
    cases = [
        ("phone", {"name": "A", "email": "a@example.com"}),
        ("phone", {"name": "A", "email": "a@example.com", "phone": "555-1234"}),
        ("phone", {"name": "A", "email": "a@example.com", "phone": None}),
        ("externalId", {"name": "A", "email": "a@example.com"}),
        ("externalId", {"name": "A", "email": "a@example.com", "externalId": None}),
        ("fax", {"name": "A", "email": "a@example.com"}),
        ("Email", {"name": "A", "email": "a@example.com"}),
    ]
    for on, body in cases:
        await error_of(await upsert_on(api, tenant, on, **body), 400, "VALIDATION_ERROR")
    listing = await data_of(await api.get(tenant.leads_url, headers=tenant.headers))
    assert listing["pagination"]["total"] == 0


async def test_a_batch_upserts_by_phone_and_an_item_without_one_fails_alone(api, tenant):
    items = [
        {"name": "B1", "email": "b1@example.com", "phone": PHONE_FORMS[0]},
        {"name": "B2", "email": "b2@example.com", "phone": PHONE_FORMS[1], "metadata": {"x": 1}},
        {"name": "B3", "email": "b3@example.com"},
    ]
    resp = await api.post(
        tenant.leads_url + "/batch",
        json={"leads": items, "upsert": "phone"},
        headers=tenant.headers,
    )
    results = (await data_of(resp))["results"]
    assert [r["status"] for r in results] == [201, 200, 400]
    assert results[0]["lead"]["id"] == results[1]["lead"]["id"]
    assert results[1]["lead"]["metadata"] == {"x": 1} and results[1]["lead"]["name"] == "B2"
    bad = await api.post(
        tenant.leads_url + "/batch", json={"leads": items, "upsert": "fax"}, headers=tenant.headers
    )
    await error_of(bad, 400, "VALIDATION_ERROR")


async def test_upserts_by_phone_and_external_id_are_tenant_isolated(api, tenant, other_tenant):
    body = {"name": "T", "email": "t@example.com", "phone": "+442071838750", "externalId": "t-1"}
    for on in ("phone", "externalId"):
        mine = await data_of(
            await upsert_on(api, tenant, on, **body), 201 if on == "phone" else 200
        )
        theirs = await data_of(
            await upsert_on(api, other_tenant, on, **body), 201 if on == "phone" else 200
        )
        assert mine["id"] != theirs["id"]


async def test_a_deletion_removes_the_guards_of_its_phone_and_external_id(api, tenant, mongo):
    body = {"name": "G", "email": "g@example.com", "phone": "+442071838751", "externalId": "g-1"}
    lead = await data_of(await upsert_on(api, tenant, "phone", **body), 201)
    await data_of(await upsert_on(api, tenant, "externalId", **body), 200)
    guards = mongo.db["upsert_guards"]
    mine = {"_id": {"$gte": f"{tenant.chatbot_id}:", "$lt": f"{tenant.chatbot_id};"}}
    assert await guards.count_documents(mine) == 2
    found = await guards.find(mine).to_list(None)
    assert not any("+442071838751" in doc["_id"] or "g-1" in doc["_id"] for doc in found)
    resp = await api.delete(
        tenant.lead_url(lead["id"]), params={"confirm": "true"}, headers=tenant.headers
    )
    await data_of(resp)
    assert await guards.count_documents(mine) == 0
