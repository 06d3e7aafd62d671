"""Snapshot reads (store/snapshots.py), and a chatbot's documents read in one
(leads/dump_reads.py): what `admin dump` relies on to be consistent while writes go on."""

from __future__ import annotations

import inspect
import secrets
from typing import Any

import pytest

from pollybot_leads.leads.dump_reads import CHATBOT_COLLECTIONS, read_chatbot
from pollybot_leads.leads.writes import CREATE, DELETE, UPDATE, LeadWrite
from pollybot_leads.store.snapshots import in_snapshot


async def _session(mongo, **options: Any) -> Any:
    session = mongo.client.start_session(**options)
    return await session if inspect.isawaitable(session) else session


async def _end(session: Any) -> None:
    ended = session.end_session()
    if inspect.isawaitable(ended):
        await ended


async def seed(leads_repo, tenant, n: int, batch: int = 100) -> None:
    """``n`` leads created as the API creates them (with their counters and events)."""
    for start in range(0, n, batch):
        writes = [
            LeadWrite(CREATE, {"name": f"Lead {i}", "email": f"lead{i}@snap.example.com"})
            for i in range(start, min(n, start + batch))
        ]
        outcomes = await leads_repo.write(
            chatbot_id=tenant.chatbot_id, workspace_id=tenant.workspace_id, writes=writes
        )
        assert not [o for o in outcomes if isinstance(o, Exception)]


def replayed(events: list[dict[str, Any]]) -> set[str]:
    """The leads the events leave alive, in their order."""
    alive: set[str] = set()
    for event in events:
        lead_id = event["data"]["lead"]["id"]
        if event["type"] == "lead.deleted":
            alive.discard(lead_id)
        else:
            alive.add(lead_id)
    return alive


async def test_a_snapshot_sees_one_moment_across_collections_and_cursor_batches(mongo):
    a = mongo.db[f"snap_a_{secrets.token_hex(4)}"]
    b = mongo.db[f"snap_b_{secrets.token_hex(4)}"]
    await a.insert_many([{"_id": i} for i in range(100)])
    await b.insert_one({"_id": "n", "n": 1})
    try:

        async def read(session: Any) -> tuple[list[int], int]:
            seen = []
            async for doc in a.find({}, batch_size=10, session=session):
                seen.append(doc["_id"])
                if len(seen) == 15:  # between two batches: others commit
                    await a.insert_many([{"_id": 1000 + i} for i in range(10)])
                    await a.delete_one({"_id": 99})
                    await b.update_one({"_id": "n"}, {"$inc": {"n": 1}})
            other = await b.find_one({"_id": "n"}, session=session)
            return seen, other["n"]

        seen, n = await in_snapshot(mongo, read)
        assert sorted(seen) == list(range(100)) and n == 1
        assert await a.count_documents({}) == 109 and (await b.find_one({}))["n"] == 2
    finally:
        await a.drop()
        await b.drop()


async def test_secantus_does_not_pin_the_reads_of_a_snapshot_session(mongo):
    """Why the dump reads in a transaction: SecantusDB 0.7.0b3 accepts a snapshot session
    (readConcern snapshot outside a transaction) but each read sees the latest commits.
    On mongod a snapshot session's reads are pinned: this quirk is SecantusDB's."""
    if not mongo.quirks.any:
        pytest.skip("mongod pins a snapshot session's reads")
    probe = mongo.db[f"snap_session_{secrets.token_hex(4)}"]
    await probe.insert_one({"_id": "n", "n": 1})
    session = await _session(mongo, snapshot=True)
    try:
        first = await probe.find_one({"_id": "n"}, session=session)
        await probe.update_one({"_id": "n"}, {"$inc": {"n": 1}})
        second = await probe.find_one({"_id": "n"}, session=session)
    finally:
        await _end(session)
        await probe.drop()
    assert first["n"] == 1
    assert second["n"] == 2  # pinned, it would still be 1: the day it is, see snapshots.py


async def test_a_chatbots_leads_counters_and_events_are_read_as_of_one_moment(
    mongo, leads_repo, tenant
):
    cb = tenant.chatbot_id
    await seed(leads_repo, tenant, 1200)
    before = {doc["_id"] async for doc in mongo.db["leads"].find({"chatbotId": cb}, {"_id": 1})}
    changed = sorted(before)[:20]
    got: dict[str, list[dict[str, Any]]] = {name: [] for name in CHATBOT_COLLECTIONS}
    pages: list[int] = []

    async def write_meanwhile() -> None:
        writes = [
            LeadWrite(CREATE, {"name": f"Later {i}", "email": f"later{i}@snap.example.com"})
            for i in range(50)
        ]
        writes += [LeadWrite(UPDATE, {"status": "converted"}, lead_id) for lead_id in changed[:10]]
        writes += [LeadWrite(DELETE, {}, lead_id, audit={}) for lead_id in changed[10:]]
        outcomes = await leads_repo.write(
            chatbot_id=cb, workspace_id=tenant.workspace_id, writes=writes
        )
        assert not [o for o in outcomes if isinstance(o, Exception)]

    async def read(session: Any) -> None:
        for docs in got.values():
            docs.clear()
        pages.clear()
        async for collection, docs in read_chatbot(mongo.db, session, cb, mongo.quirks):
            got[collection].extend(docs)
            if collection == "leads":
                pages.append(len(docs))
                if len(pages) == 1:  # between two reads of its leads: writes commit
                    await write_meanwhile()

    await in_snapshot(mongo, read)
    assert len(pages) > 1, pages  # the leads took several reads
    leads = {doc["_id"]: doc for doc in got["leads"]}
    assert set(leads) == before
    assert {leads[lead_id]["status"] for lead_id in changed} == {"new"}
    assert sum(shard.get("total", 0) for shard in got["lead_counts"]) == len(before)
    (sequence,) = got["event_sequences"]
    assert [e["sequence"] for e in got["events"]] == list(range(1, sequence["last"] + 1))
    assert replayed(got["events"]) == before
    # Meanwhile the chatbot moved on: 50 created, 10 updated, 10 deleted.
    counts = await leads_repo.read_counts(cb)
    assert counts["total"] == len(before) + 40
    moved = await mongo.db["event_sequences"].find_one({"_id": cb})
    assert moved["last"] == sequence["last"] + 70
