"""An export's reads examine only the chatbot's own leads, return every match once in
creation order, and keep doing so while the leads change between two reads.

The data set is test_query_plans.py's: a big chatbot (2,000 leads) beside a small one
(30), every list filter shape. Each read an export sends is explained (executionStats):
none may examine more index keys than the small chatbot holds in the index it used, nor
more documents than it has; the leads must equal a brute-force filter and sort. Reads
are made small and the first windows far too narrow, so that every export takes many
windowed reads, cut ones and whole ones, and leads sharing a creation time fall on both
sides of a read's end.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import timedelta

import pytest

from pollybot_leads.leads.documents import LIST_PROJECTION
from pollybot_leads.leads.export_reads import EXPORT_SORTS, LeadExporter
from pollybot_leads.leads.queries import LeadQuery
from pollybot_leads.store import walks as export_module

from .test_query_plans import (
    PLAIN_READS,
    SHAPES,
    assert_only_small_examined,
    expected_ids,
    seeded,
    shapes,
)


@pytest.fixture
def small_reads(monkeypatch) -> None:
    monkeypatch.setattr(export_module, "READ_LIMIT", 3)
    monkeypatch.setattr(export_module, "FIRST_WIDTH", timedelta(hours=1))


async def exported(exporter: LeadExporter, chatbot_id: str, query: LeadQuery, plans=None):
    ids = []
    async for page in exporter.pages(chatbot_id, query, explain=plans):
        ids += [doc["_id"] for doc in page]
    return ids


@pytest.mark.parametrize("shape", SHAPES)
async def test_exports_examine_only_the_chatbots_own_leads(
    mongo,
    tenants,
    plain_copy,
    small_reads,
    shape,
):
    small, docs = tenants["small"], tenants["small_docs"]
    store = LeadExporter(mongo.db["leads"], LIST_PROJECTION, quirks=mongo.quirks)
    plain = LeadExporter(plain_copy, LIST_PROJECTION, quirks=PLAIN_READS)
    for sort in EXPORT_SORTS:
        query = LeadQuery(sort=sort, **shapes(tenants)[shape])
        expected = expected_ids(docs, query)
        plans: list = []
        assert await exported(store, small, query, plans) == expected, (shape, sort)
        if plans:  # none when a metadata value can never match
            assert_only_small_examined(plans, tenants, (shape, sort))
        # The single queries a mongod gets, on the small chatbot's leads alone.
        assert await exported(plain, small, query) == expected, (shape, sort, "plain")


@pytest.mark.parametrize("sort", EXPORT_SORTS)
@pytest.mark.parametrize("statuses", [(), ("new", "contacted")])
async def test_each_lead_once_while_leads_change_between_reads(
    accounts, leads_repo, small_reads, sort, statuses
):
    """Between every two reads: two leads move between two statuses that both match
    (and are renamed), one is deleted, one is created. Every lead that exists throughout
    appears exactly once; no lead appears twice."""
    workspace = await accounts.create_workspace(name="moving")
    chatbot = await accounts.create_chatbot(workspace_id=workspace["id"], name="moving")
    chatbot_id = chatbot["id"]
    run = 10 + 3 * EXPORT_SORTS.index(sort) + len(statuses)  # ids of its own
    docs = seeded(chatbot_id, workspace["id"], 60, timedelta(days=2), seed=run)
    for doc in docs:
        doc["status"] = random.Random(doc["_id"]).choice(["new", "contacted"])
        doc["statusHistory"][0]["status"] = doc["status"]
    await leads_repo.insert_many(docs=docs)
    await leads_repo.recount(chatbot_id=chatbot_id)
    ids = [d["_id"] for d in docs]
    rng = random.Random(11)
    doomed = rng.sample(ids, 15)
    stable = [i for i in ids if i not in doomed]
    got, created, step = [], set(), 0
    async for page in leads_repo.export(
        chatbot_id=chatbot_id, query=LeadQuery(sort=sort, statuses=statuses)
    ):
        got += [lead["id"] for lead in page]
        step += 1
        for lead_id in rng.sample(stable, 2):
            status = rng.choice(["new", "contacted"])
            await leads_repo.update(
                chatbot_id=chatbot_id,
                lead_id=lead_id,
                changes={"status": status, "name": f"Moved {step}"},
            )
        if doomed:
            await leads_repo.delete(chatbot_id=chatbot_id, lead_id=doomed.pop(), audit={})
        lead = await leads_repo.create(
            chatbot_id=chatbot_id,
            workspace_id=workspace["id"],
            fields={"name": f"New {step}", "email": f"new{step}@example.com"},
        )
        created.add(lead["id"])
    assert step > 20  # the changes came between many reads
    assert len(got) == len(set(got)), "a lead appeared twice"
    assert set(stable) <= set(got)
    assert set(got) <= set(ids) | created


async def test_an_export_of_nothing(mongo, leads_repo, tenants):
    exporter = LeadExporter(mongo.db["leads"], LIST_PROJECTION, quirks=mongo.quirks)
    for sort in EXPORT_SORTS:
        assert await exported(exporter, "cb_0000000000000000", LeadQuery(sort=sort)) == []
    after = replace(LeadQuery(), created_after=tenants["small_docs"][-1]["createdAt"])
    assert await exported(exporter, tenants["small"], replace(after, sort="createdAt")) != []
