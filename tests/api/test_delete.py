import pytest

from .helpers import TS, create_lead, data_of, error_of


@pytest.mark.parametrize(
    ("params", "headers"),
    [
        ({}, {}),
        ({"confirm": "false"}, {}),
        ({"confirm": "yes"}, {}),
        ({}, {"X-Confirm-Delete": "false"}),
        ({"confirm": ""}, {}),
    ],
)
async def test_delete_needs_confirmation(api, tenant, params, headers):
    lead = await create_lead(api, tenant)
    resp = await api.delete(
        tenant.lead_url(lead["id"]), params=params, headers={**tenant.headers, **headers}
    )
    await error_of(resp, 400, "CONFIRMATION_REQUIRED")
    assert (await api.get(tenant.lead_url(lead["id"]), headers=tenant.headers)).status == 200


@pytest.mark.parametrize(
    ("params", "headers"),
    [({"confirm": "true"}, {}), ({}, {"X-Confirm-Delete": "true"})],
)
async def test_confirmed_delete_removes_the_lead_everywhere(api, tenant, params, headers):
    lead = await create_lead(api, tenant)
    resp = await api.delete(
        tenant.lead_url(lead["id"]), params=params, headers={**tenant.headers, **headers}
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["success"] is True and body["message"] == "Lead deleted successfully"
    assert body["data"]["id"] == lead["id"] and TS.match(body["data"]["deletedAt"])
    url = tenant.lead_url(lead["id"])
    await error_of(await api.get(url, headers=tenant.headers), 404, "LEAD_NOT_FOUND")
    await error_of(
        await api.put(url, json={"name": "x"}, headers=tenant.headers), 404, "LEAD_NOT_FOUND"
    )
    await error_of(
        await api.delete(url, params={"confirm": "true"}, headers=tenant.headers),
        404,
        "LEAD_NOT_FOUND",
    )
    listing = await data_of(await api.get(tenant.leads_url, headers=tenant.headers))
    assert listing["leads"] == [] and listing["pagination"]["total"] == 0


async def test_audit_record_holds_ids_and_no_personal_data(api, tenant, mongo):
    lead = await create_lead(
        api,
        tenant,
        name="Zed Secretname",
        email="zed@private.example",
        phone="+44 20 7946 0000",
        metadata={"ssn": "123-45-6789"},
    )
    resp = await api.delete(
        tenant.lead_url(lead["id"]),
        params={"confirm": "true"},
        headers={**tenant.headers, "X-Request-Id": "audit-req-1"},
    )
    deleted = await data_of(resp)
    records = await mongo.db["audit_log"].find({"leadId": lead["id"]}).to_list(None)
    assert len(records) == 1
    record = records[0]
    assert record["action"] == "lead.delete"
    assert record["chatbotId"] == tenant.chatbot_id
    assert record["workspaceId"] == tenant.workspace_id
    assert record["apiKeyId"] == tenant.key_id
    assert record["requestId"] == "audit-req-1"
    assert record["at"].strftime("%Y-%m-%dT%H:%M:%S") == deleted["deletedAt"][:19]
    text = repr(record)
    for personal in ("Secretname", "zed@private", "7946", "123-45-6789", "ssn"):
        assert personal not in text
    assert await mongo.db["leads"].count_documents({"_id": lead["id"]}) == 0


async def test_unknown_query_parameters_are_refused_on_delete(api, tenant):
    lead = await create_lead(api, tenant)
    resp = await api.delete(
        tenant.lead_url(lead["id"]), params={"confirm": "true", "x": "1"}, headers=tenant.headers
    )
    error = await error_of(resp, 400, "VALIDATION_ERROR")
    assert set(error["details"]) == {"x"}
    assert (await api.get(tenant.lead_url(lead["id"]), headers=tenant.headers)).status == 200
