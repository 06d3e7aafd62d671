"""The event feed: a chatbot's events in sequence order, paged by `after`, tenant-isolated."""

from __future__ import annotations

from pollybot_leads.leads.event_log import LEAD_DELETED, LEAD_UPDATED, EventLog
from pollybot_leads.timeutil import utcnow

from .helpers import TS, data_of, error_of


async def _append(mongo, tenant, events):
    log = EventLog(mongo.db, mongo.quirks)
    return await mongo.transaction(
        lambda s: log.append(s, tenant.chatbot_id, tenant.workspace_id, events, utcnow())
    )


def _lead(tenant, lead_id="lead_0123456789abcdef"):
    now = utcnow()
    return {
        "id": lead_id,
        "chatbotId": tenant.chatbot_id,
        "workspaceId": tenant.workspace_id,
        "name": "Ada",
        "email": "ada@example.com",
        "phone": None,
        "source": None,
        "status": "contacted",
        "metadata": {},
        "statusHistory": [{"status": "new", "changedAt": now}],
        "createdAt": now,
        "updatedAt": now,
    }


async def test_the_feed_pages_events_in_order(api, mongo, tenant, other_tenant):
    changes = {"status": {"from": "new", "to": "contacted"}}
    await _append(
        mongo,
        tenant,
        [(LEAD_UPDATED, {"lead": _lead(tenant), "changes": changes})] * 3
        + [(LEAD_DELETED, {"lead": {"id": "lead_0123456789abcdef"}})],
    )
    await _append(mongo, other_tenant, [(LEAD_DELETED, {"lead": {"id": "lead_0123456789abcdef"}})])
    url = f"/api/v1/chatbots/{tenant.chatbot_id}/events"
    first = await data_of(await api.get(url, params={"limit": "3"}, headers=tenant.headers))
    assert [e["sequence"] for e in first["events"]] == [1, 2, 3]
    assert first["pagination"] == {"after": 0, "limit": 3, "hasMore": True, "nextAfter": 3}
    event = first["events"][0]
    assert event["type"] == "lead.updated" and event["event"] == "LEAD_UPDATED"
    assert event["chatbotId"] == tenant.chatbot_id and event["workspaceId"] == tenant.workspace_id
    assert event["id"].startswith("evt_") and TS.match(event["createdAt"])
    assert event["data"]["changes"] == changes
    lead = event["data"]["lead"]
    assert TS.match(lead["createdAt"]) and TS.match(lead["statusHistory"][0]["changedAt"])
    rest = await data_of(await api.get(url, params={"after": "3"}, headers=tenant.headers))
    assert [e["type"] for e in rest["events"]] == ["lead.deleted"]
    assert rest["events"][0]["data"] == {"lead": {"id": "lead_0123456789abcdef"}}
    assert rest["pagination"]["hasMore"] is False and rest["pagination"]["nextAfter"] == 4
    empty = await data_of(await api.get(url, params={"after": "4"}, headers=tenant.headers))
    assert empty["events"] == [] and empty["pagination"]["nextAfter"] == 4
    # Another workspace's key does not see this chatbot at all.
    await error_of(await api.get(url, headers=other_tenant.headers), 404, "CHATBOT_NOT_FOUND")
    await error_of(await api.get(url), 401, "UNAUTHORIZED")


async def test_bad_feed_parameters_are_400(api, tenant):
    url = f"/api/v1/chatbots/{tenant.chatbot_id}/events"
    for params in (
        {"after": "-1"},
        {"after": "x"},
        {"limit": "0"},
        {"limit": "101"},
        {"page": "2"},
        [("after", "1"), ("after", "2")],
    ):
        resp = await api.get(url, params=params, headers=tenant.headers)
        await error_of(resp, 400, "VALIDATION_ERROR")


async def test_a_deleted_leads_earlier_events_stay_in_order_redacted(api, tenant):
    resp = await api.post(
        tenant.leads_url,
        json={"name": "Secret Person", "email": "secret@private.example", "phone": "+1 555 0100"},
        headers=tenant.headers,
    )
    lead = await data_of(resp, 201)
    resp = await api.put(
        tenant.lead_url(lead["id"]), json={"status": "contacted"}, headers=tenant.headers
    )
    await data_of(resp)
    url = f"/api/v1/chatbots/{tenant.chatbot_id}/events"
    before = (await data_of(await api.get(url, headers=tenant.headers)))["events"]
    resp = await api.delete(
        tenant.lead_url(lead["id"]), params={"confirm": "true"}, headers=tenant.headers
    )
    await data_of(resp)
    after = (await data_of(await api.get(url, headers=tenant.headers)))["events"]
    assert [e["sequence"] for e in after] == [1, 2, 3]
    for old, new in zip(before, after[:2], strict=True):
        assert {**new, "data": None} == {**old, "data": None}  # id, type, sequence, times
        assert new["data"] == {"lead": {"id": lead["id"]}, "redacted": True}
    assert after[2]["type"] == "lead.deleted"
    assert after[2]["data"] == {"lead": {"id": lead["id"]}}
    assert "secret" not in str(after).lower() and "0100" not in str(after)
