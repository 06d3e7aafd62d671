import asyncio

import pytest

from .helpers import TS, create_lead, data_of, error_of


async def put(api, tenant, lead_id, payload):
    return await api.put(tenant.lead_url(lead_id), json=payload, headers=tenant.headers)


async def get(api, tenant, lead_id):
    return await data_of(await api.get(tenant.lead_url(lead_id), headers=tenant.headers))


async def test_only_sent_fields_change(api, tenant):
    lead = await create_lead(api, tenant, phone="123", source="web", metadata={"a": 1})
    updated = await data_of(await put(api, tenant, lead["id"], {"name": "Jane Roe"}))
    assert updated["name"] == "Jane Roe"
    for field in (
        "email",
        "phone",
        "source",
        "status",
        "metadata",
        "createdAt",
        "id",
        "chatbotId",
        "workspaceId",
        "statusHistory",
    ):
        assert updated[field] == lead[field], field
    assert TS.match(updated["updatedAt"]) and updated["updatedAt"] > lead["updatedAt"]
    assert await get(api, tenant, lead["id"]) == updated


async def test_null_clears_phone_and_source(api, tenant):
    lead = await create_lead(api, tenant, phone="123", source="web")
    updated = await data_of(await put(api, tenant, lead["id"], {"phone": None, "source": None}))
    assert updated["phone"] is None and updated["source"] is None


@pytest.mark.parametrize("field", ["name", "email", "status", "metadata"])
async def test_null_is_refused_for_required_fields(api, tenant, field):
    lead = await create_lead(api, tenant)
    error = await error_of(
        await put(api, tenant, lead["id"], {field: None}), 400, "VALIDATION_ERROR"
    )
    assert set(error["details"]) == {field}
    assert await get(api, tenant, lead["id"]) == lead


async def test_empty_update_is_refused(api, tenant):
    lead = await create_lead(api, tenant)
    error = await error_of(await put(api, tenant, lead["id"], {}), 400, "VALIDATION_ERROR")
    assert "no fields" in error["message"].lower()


@pytest.mark.parametrize(
    "field", ["id", "chatbotId", "workspaceId", "createdAt", "updatedAt", "statusHistory"]
)
async def test_server_owned_fields_are_refused(api, tenant, field):
    lead = await create_lead(api, tenant)
    resp = await put(api, tenant, lead["id"], {field: lead[field], "name": "X"})
    error = await error_of(resp, 400, "VALIDATION_ERROR")
    assert set(error["details"]) == {field}
    assert await get(api, tenant, lead["id"]) == lead


async def test_several_bad_fields_are_all_named_and_nothing_changes(api, tenant):
    lead = await create_lead(api, tenant)
    resp = await put(
        api,
        tenant,
        lead["id"],
        {"name": "", "email": "nope", "status": "won", "bogus": 1, "phone": "x"},
    )
    error = await error_of(resp, 400, "VALIDATION_ERROR")
    assert set(error["details"]) == {"name", "email", "status", "bogus", "phone"}
    assert await get(api, tenant, lead["id"]) == lead


async def test_metadata_is_merged_as_rfc7386(api, tenant):
    lead = await create_lead(
        api,
        tenant,
        metadata={
            "keep": 1,
            "replace": "old",
            "remove": True,
            "nested": {"a": 1, "b": {"c": 2, "d": 3}},
            "list": [1, 2, 3],
            "scalar": 5,
        },
    )
    patch = {
        "replace": "new",
        "remove": None,
        "added": {"x": [1]},
        "nested": {"b": {"c": None, "e": 4}, "f": 5},
        "list": [9],
        "scalar": {"now": "obj"},
        "absent": None,
    }
    updated = await data_of(await put(api, tenant, lead["id"], {"metadata": patch}))
    assert updated["metadata"] == {
        "keep": 1,
        "replace": "new",
        "added": {"x": [1]},
        "nested": {"a": 1, "b": {"d": 3, "e": 4}, "f": 5},
        "list": [9],
        "scalar": {"now": "obj"},
    }
    assert (await get(api, tenant, lead["id"]))["metadata"] == updated["metadata"]


async def test_an_object_replaces_an_array_of_objects(api, tenant):
    lead = await create_lead(api, tenant, metadata={"a": [{"x": 1}], "b": {"0": "zero"}})
    updated = await data_of(
        await put(api, tenant, lead["id"], {"metadata": {"a": {"0": "obj"}, "b": {"0": None}}})
    )
    assert updated["metadata"] == {"a": {"0": "obj"}, "b": {}}


async def test_merge_result_over_the_limits_is_refused(api, tenant):
    lead = await create_lead(api, tenant, metadata={f"k{i}": i for i in range(60)})
    resp = await put(api, tenant, lead["id"], {"metadata": {f"n{i}": i for i in range(60)}})
    error = await error_of(resp, 400, "VALIDATION_ERROR")
    assert "metadata" in error["details"]
    assert await get(api, tenant, lead["id"]) == lead


async def test_merge_result_over_the_filterable_value_limit_is_refused(api, tenant):
    lead = await create_lead(api, tenant, metadata={"a": list(range(600))})
    resp = await put(api, tenant, lead["id"], {"metadata": {"b": list(range(401))}})
    error = await error_of(resp, 400, "VALIDATION_ERROR")
    assert "1000" in error["details"]["metadata"][0]
    assert await get(api, tenant, lead["id"]) == lead
    replaced = await data_of(await put(api, tenant, lead["id"], {"metadata": {"a": [1]}}))
    merged = await data_of(
        await put(api, tenant, lead["id"], {"metadata": {"b": list(range(999))}})
    )
    assert replaced["metadata"] == {"a": [1]} and merged["metadata"]["b"][-1] == 998


async def test_status_changes_are_recorded_once(api, tenant):
    lead = await create_lead(api, tenant)
    first = await data_of(await put(api, tenant, lead["id"], {"status": "contacted"}))
    same = await data_of(await put(api, tenant, lead["id"], {"status": "contacted"}))
    last = await data_of(await put(api, tenant, lead["id"], {"status": "converted"}))
    assert [h["status"] for h in first["statusHistory"]] == ["new", "contacted"]
    assert same["statusHistory"] == first["statusHistory"]
    assert same["updatedAt"] > first["updatedAt"]
    assert [h["status"] for h in last["statusHistory"]] == ["new", "contacted", "converted"]
    assert last["statusHistory"][-1]["changedAt"] == last["updatedAt"]


async def test_status_history_keeps_the_latest_100(api, tenant, leads_repo):
    lead = await create_lead(api, tenant)
    statuses = ["contacted", "qualified"] * 55
    for status in statuses:
        await leads_repo.update(
            chatbot_id=tenant.chatbot_id, lead_id=lead["id"], changes={"status": status}
        )
    history = (await get(api, tenant, lead["id"]))["statusHistory"]
    assert len(history) == 100
    assert [h["status"] for h in history] == statuses[-100:]


async def test_updated_at_moves_forward_on_rapid_updates(api, tenant):
    lead = await create_lead(api, tenant)
    stamps = [lead["updatedAt"]]
    for i in range(5):
        stamps.append(
            (await data_of(await put(api, tenant, lead["id"], {"source": f"s{i}"})))["updatedAt"]
        )
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)


async def test_fifty_concurrent_metadata_merges_all_survive(api, tenant):
    lead = await create_lead(api, tenant, metadata={"base": True, "shared": {"x": 0}})

    async def merge(i):
        return await put(
            api, tenant, lead["id"], {"metadata": {f"k{i}": i, "shared": {f"s{i}": i}}}
        )

    responses = await asyncio.gather(*(merge(i) for i in range(50)))
    assert [r.status for r in responses] == [200] * 50
    metadata = (await get(api, tenant, lead["id"]))["metadata"]
    assert metadata == {
        "base": True,
        **{f"k{i}": i for i in range(50)},
        "shared": {"x": 0, **{f"s{i}": i for i in range(50)}},
    }


async def test_concurrent_status_changes_each_recorded(api, tenant):
    lead = await create_lead(api, tenant)
    statuses = ["contacted", "qualified", "converted", "lost", "follow_up"]
    responses = await asyncio.gather(
        *(put(api, tenant, lead["id"], {"status": s}) for s in statuses)
    )
    assert [r.status for r in responses] == [200] * 5
    final = await get(api, tenant, lead["id"])
    history = [h["status"] for h in final["statusHistory"]]
    assert sorted(history[1:]) == sorted(statuses) and history[-1] == final["status"]


async def test_concurrent_name_and_email_changes_keep_search_consistent(api, tenant):
    lead = await create_lead(api, tenant, name="Alpha One", email="alpha@one.io")
    await asyncio.gather(
        put(api, tenant, lead["id"], {"name": "Bravo Two"}),
        put(api, tenant, lead["id"], {"email": "charlie@three.io"}),
    )
    for word, found in (("bravo", 1), ("charlie", 1), ("alpha", 0), ("three", 1)):
        resp = await api.get(tenant.leads_url, params={"search": word}, headers=tenant.headers)
        assert (await data_of(resp))["pagination"]["total"] == found, word


async def test_unknown_and_malformed_lead_ids_are_404(api, tenant):
    for lead_id in ("lead_0123456789abcdef", "nope", "lead_XYZ", "lead_0123456789ABCDEF"):
        resp = await put(api, tenant, lead_id, {"name": "x"})
        await error_of(resp, 404, "LEAD_NOT_FOUND")


async def test_fifty_concurrent_status_changes_keep_history_in_order(api, tenant):
    """Each response is the lead as that PUT left it; history times never run backwards."""
    lead = await create_lead(api, tenant)
    statuses = ["contacted", "qualified", "converted", "lost", "follow_up"] * 10

    responses = await asyncio.gather(
        *(
            put(api, tenant, lead["id"], {"status": s, "metadata": {f"k{i}": i}})
            for i, s in enumerate(statuses)
        )
    )
    bodies = [await data_of(r) for r in responses]
    for i, (sent, body) in enumerate(zip(statuses, bodies, strict=True)):
        assert body["status"] == sent  # this PUT's status, not another request's
        assert body["metadata"][f"k{i}"] == i
        times = [h["changedAt"] for h in body["statusHistory"]]
        assert times == sorted(times)
        assert body["statusHistory"][-1]["status"] == sent
    final = await get(api, tenant, lead["id"])
    times = [h["changedAt"] for h in final["statusHistory"]]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert final["metadata"] == {f"k{i}": i for i in range(50)}
    # The update that wrote last is the one whose updatedAt is newest.
    newest = max(bodies, key=lambda b: b["updatedAt"])
    assert final == newest


async def test_totals_stay_exact_under_concurrent_writes(api, tenant):
    created = await asyncio.gather(*(create_lead(api, tenant) for _ in range(30)))
    ids = [lead["id"] for lead in created]
    await asyncio.gather(
        *(put(api, tenant, i, {"status": "lost"}) for i in ids[:10]),
        *(
            api.delete(tenant.lead_url(i) + "?confirm=true", headers=tenant.headers)
            for i in ids[5:15]
        ),
        *(put(api, tenant, i, {"status": "qualified"}) for i in ids[20:25]),
    )
    listed = await data_of(
        await api.get(tenant.leads_url, headers=tenant.headers, params={"limit": 100})
    )
    assert listed["pagination"]["total"] == len(listed["leads"]) == 20
    for status in ("new", "lost", "qualified"):
        page = await data_of(
            await api.get(
                tenant.leads_url, headers=tenant.headers, params={"status": status, "limit": 100}
            )
        )
        assert page["pagination"]["total"] == len(page["leads"]), status
        assert all(lead["status"] == status for lead in page["leads"])


@pytest.mark.parametrize(
    ("field", "value"),
    [("name", "a\u0000b"), ("email", "x\u0000@example.com"), ("source", "a\nb"), ("phone", "1\t2")],
)
async def test_control_characters_are_refused_on_update(api, tenant, field, value):
    lead = await create_lead(api, tenant, source="web", phone="123")
    resp = await api.put(tenant.lead_url(lead["id"]), json={field: value}, headers=tenant.headers)
    error = await error_of(resp, 400, "VALIDATION_ERROR")
    assert set(error["details"]) == {field}
    unchanged = await data_of(await api.get(tenant.lead_url(lead["id"]), headers=tenant.headers))
    assert unchanged == lead


async def test_an_empty_body_is_refused_on_update(api, tenant):
    lead = await create_lead(api, tenant)
    resp = await api.put(
        tenant.lead_url(lead["id"]),
        data=b"",
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    await error_of(resp, 400, "INVALID_JSON")
