"""A deletion finds the lead's copies by index: its own events and kept results, never
those of other leads or chatbots (it runs inside the chatbot's write transaction).

Each filter the deletion's transaction updates by (leads/event_log.py ``lead_events``,
idempotency/records.py ``results_holding``) is explained as a find beside many other
leads' and chatbots' documents: it examines the lead's own keys and documents alone.
(SecantusDB 0.7 explains a find, not an update; its updates choose the index the same
way: an update by one of these filters costs the same at 1,000 and 100,000 documents.)
"""

from __future__ import annotations

from pollybot_leads.idempotency.records import results_holding
from pollybot_leads.leads.event_log import LEAD_CREATED, LEAD_UPDATED, lead_events
from pollybot_leads.timeutil import utcnow
from tests.conftest import make_tenant
from tests.storage.test_quirks import stages

NOISE = 1000


async def explained(coll, filter_) -> tuple[list[str], dict]:
    plan = await coll.database.command(
        "explain", {"find": coll.name, "filter": filter_}, verbosity="executionStats"
    )
    return stages(plan["queryPlanner"]), plan["executionStats"]


async def test_a_deletion_reads_only_the_leads_own_events_and_results(mongo, accounts, leads_repo):
    tenant, other = await make_tenant(accounts), await make_tenant(accounts)
    cb, ws = tenant.chatbot_id, tenant.workspace_id
    lead = await leads_repo.create(
        chatbot_id=cb, workspace_id=ws, fields={"name": "Ada", "email": "ada@x.io"}
    )
    for status in ("contacted", "qualified"):
        await leads_repo.update(chatbot_id=cb, lead_id=lead["id"], changes={"status": status})
    now = utcnow()
    # Other leads' events, in this chatbot and another (one naming the same lead id).
    noise = [
        {
            "_id": f"evt_n{i:015x}",
            "chatbotId": cb if i % 2 else other.chatbot_id,
            "workspaceId": ws,
            "sequence": 10_000 + i,
            "type": LEAD_CREATED if i % 3 else LEAD_UPDATED,
            "createdAt": now,
            "data": {"lead": {"id": lead["id"] if i == 0 else f"lead_{i:016x}"}},
        }
        for i in range(NOISE)
    ]
    await mongo.db["events"].insert_many(noise)
    names, stats = await explained(mongo.db["events"], lead_events(cb, lead["id"]))
    assert "COLLSCAN" not in names
    assert stats["nReturned"] == 3
    assert stats["totalKeysExamined"] <= 4 and stats["totalDocsExamined"] <= 3

    records = [
        {"_id": f"idem-n{i:05d}", "state": "done", "createdAt": now, "leadIds": [f"lead_{i:016x}"]}
        for i in range(NOISE)
    ]
    records += [{"_id": f"idem-x{i:05d}", "state": "done", "createdAt": now} for i in range(NOISE)]
    records += [
        {"_id": "idem-a", "state": "done", "createdAt": now, "leadIds": [lead["id"]]},
        {"_id": "idem-b", "state": "done", "createdAt": now, "leadIds": ["lead_1", lead["id"]]},
    ]
    await mongo.db["idempotency_keys"].insert_many(records)
    names, stats = await explained(mongo.db["idempotency_keys"], results_holding([lead["id"]]))
    assert "COLLSCAN" not in names
    assert stats["nReturned"] == 2
    assert stats["totalKeysExamined"] <= 3 and stats["totalDocsExamined"] <= 2
    # Gone again (by index: the chatbots, an _id range), for the rest of the session.
    await mongo.db["events"].delete_many({"chatbotId": {"$in": [cb, other.chatbot_id]}})
    await mongo.db["idempotency_keys"].delete_many({"_id": {"$gte": "idem-", "$lt": "idem."}})
