"""Writes committed together (group commits) keep each lead's bookkeeping its own."""

import asyncio
import time
import uuid
from datetime import timedelta

from pollybot_leads.errors import IdempotencyInProgress, LeadNotFound
from pollybot_leads.idempotency.records import IdempotencyStore, Lease, Receipt, StoredResponse
from pollybot_leads.leads import counters
from pollybot_leads.leads.queries import LeadQuery
from pollybot_leads.leads.repository import LeadRepository
from pollybot_leads.leads.results import OneLead
from pollybot_leads.leads.writes import CREATE, DELETE, UPDATE, UPSERT, Deleted, LeadWrite, Written
from pollybot_leads.store.client import store_deadline
from pollybot_leads.timeutil import utcnow
from tests.conftest import make_tenant
from tests.storage.test_query_plans import CommandCounter, counted_mongo


async def test_updates_committed_together_count_on_the_leads_own_chatbot(leads_repo, accounts):
    ours, theirs = await make_tenant(accounts), await make_tenant(accounts)
    lead = await leads_repo.create(
        chatbot_id=ours.chatbot_id,
        workspace_id=ours.workspace_id,
        fields={"name": "Ada Lovelace", "email": "ada@example.com"},
    )
    lead_id = lead["id"]
    # Writes group by the chatbot named: ours queue behind each other, the other
    # chatbot's (naming our lead) never touch it.
    results = await asyncio.gather(
        leads_repo.update(chatbot_id=ours.chatbot_id, lead_id=lead_id, changes={"phone": "1"}),
        leads_repo.update(
            chatbot_id=theirs.chatbot_id, lead_id=lead_id, changes={"status": "lost"}
        ),
        leads_repo.update(
            chatbot_id=ours.chatbot_id, lead_id=lead_id, changes={"status": "qualified"}
        ),
        return_exceptions=True,
    )
    assert results[0]["phone"] == "1"
    assert isinstance(results[1], LeadNotFound)
    assert results[2]["status"] == "qualified" and results[2]["phone"] == "1"
    counts = await leads_repo.read_counts(ours.chatbot_id)
    assert counts["total"] == 1
    assert counts["byStatus"]["qualified"] == 1 and counts["byStatus"]["new"] == 0
    other = await leads_repo.read_counts(theirs.chatbot_id)
    assert other["total"] == 0 and set(other["byStatus"].values()) == {0}


async def test_a_create_whose_id_is_taken_gets_another(leads_repo, accounts, monkeypatch):
    """Creates are inserted in batches (insert_many); a colliding id is drawn again."""
    from pollybot_leads import ids

    tenant = await make_tenant(accounts)
    fields = {"name": "Grace Hopper", "email": "grace@example.com"}
    first = await leads_repo.create(
        chatbot_id=tenant.chatbot_id, workspace_id=tenant.workspace_id, fields=fields
    )
    draws = iter([first["id"]])  # the next id drawn is one that exists
    real = ids.new_id
    monkeypatch.setattr(ids, "new_id", lambda prefix: next(draws, None) or real(prefix))
    second = await leads_repo.create(
        chatbot_id=tenant.chatbot_id, workspace_id=tenant.workspace_id, fields=fields
    )
    assert second["id"] != first["id"]
    assert (await leads_repo.get(chatbot_id=tenant.chatbot_id, lead_id=first["id"]))[
        "createdAt"
    ] == first["createdAt"]
    assert (await leads_repo.read_counts(tenant.chatbot_id))["total"] == 2


async def test_a_request_of_many_writes_costs_a_few_round_trips(settings, accounts, leads_repo):
    """A batch of 50 upserts of known emails and 50 updates reads and writes in bulk:
    the store sees a handful of commands, not one or more per write."""
    tenant = await make_tenant(accounts)
    cb, ws = tenant.chatbot_id, tenant.workspace_id
    known = [
        await leads_repo.create(
            chatbot_id=cb, workspace_id=ws, fields={"name": f"K{i}", "email": f"k{i}@x.com"}
        )
        for i in range(100)
    ]
    counter = CommandCounter()
    async with counted_mongo(settings, counter) as mongo:
        repo = LeadRepository(mongo)
        writes = [
            LeadWrite(UPSERT, {"name": f"U{i}", "email": f"K{i}@X.com"}, merge={"name": f"U{i}"})
            for i in range(50)
        ] + [LeadWrite(UPDATE, {"status": "contacted"}, lead["id"]) for lead in known[50:]]
        counter.names.clear()
        outcomes = await repo.write(chatbot_id=cb, workspace_id=ws, writes=writes)
        assert len(counter.names) <= 12, counter.names
    assert [o.lead["id"] for o in outcomes] == [lead["id"] for lead in known]
    assert [o.created for o in outcomes] == [False] * 100
    stored = await leads_repo.get(chatbot_id=cb, lead_id=known[7]["id"])
    assert stored["name"] == "U7" and stored["email"] == "k7@x.com"
    stored = await leads_repo.get(chatbot_id=cb, lead_id=known[70]["id"])
    assert stored["status"] == "contacted"
    counts = await leads_repo.read_counts(cb)
    assert counts["total"] == 100 and counts["byStatus"]["contacted"] == 50


async def test_a_write_whose_idempotency_lease_passed_to_a_retry_writes_nothing(
    leads_repo, mongo, accounts
):
    """A request presumed dead lost its key to a retry: if it still reaches its write,
    that write is dropped whole (409), and writes queued beside it still commit."""
    tenant = await make_tenant(accounts)
    store = IdempotencyStore(mongo.db)
    key = uuid.uuid4().hex
    first = await store.begin(scope="key_t", key=key, fingerprint="f")
    assert isinstance(first, Lease)
    await mongo.db["idempotency_keys"].update_one(  # its lease runs out...
        {"_id": first.record_id}, {"$set": {"leaseUntil": utcnow() - timedelta(seconds=1)}}
    )
    retry = await store.begin(scope="key_t", key=key, fingerprint="f")  # ...a retry takes it
    assert isinstance(retry, Lease) and retry.token != first.token

    class Answer:
        def render(self, outcomes):
            return StoredResponse(201, b"{}", {})

    fields = {"name": "Ada", "email": "ada@example.com"}
    cb, ws = tenant.chatbot_id, tenant.workspace_id
    gate = asyncio.Event()
    real = leads_repo._commit

    async def held_commit(chatbot_id, units):  # the first commit waits, so the next two
        await gate.wait()  # queue and go together
        return await real(chatbot_id, units)

    leads_repo._commit = held_commit
    try:
        blocker = asyncio.ensure_future(
            leads_repo.write(chatbot_id=cb, workspace_id=ws, writes=[LeadWrite(CREATE, fields)])
        )
        await asyncio.sleep(0.05)
        lost = asyncio.ensure_future(
            leads_repo.write(
                chatbot_id=cb,
                workspace_id=ws,
                writes=[LeadWrite(CREATE, fields)],
                receipt=Receipt(first, Answer()),
            )
        )
        beside = asyncio.ensure_future(
            leads_repo.write(chatbot_id=cb, workspace_id=ws, writes=[LeadWrite(CREATE, fields)])
        )
        await asyncio.sleep(0.05)
        gate.set()
        results = await asyncio.gather(blocker, lost, beside, return_exceptions=True)
    finally:
        leads_repo._commit = real
    assert isinstance(results[1], IdempotencyInProgress)
    assert all(isinstance(result[0], Written) for result in (results[0], results[2]))
    assert (await leads_repo.read_counts(cb))["total"] == 2


async def test_counters_by_source_and_bounds_follow_every_write_and_equal_a_recount(
    leads_repo, accounts, mongo
):
    """Counts by (status, source) and the bounds beside them (first creation time, lowest
    and highest name) move in each write's transaction; a recount finds the same counts.
    Bounds only ever widen (a rename or delete leaves them), and still hold every lead;
    name bounds hold no name, only the classes of the lowest and highest first letters."""
    tenant = await make_tenant(accounts)
    cb, ws = tenant.chatbot_id, tenant.workspace_id
    made = []
    for i, (name, source, status) in enumerate(
        [
            ("Mia", "web", "new"),
            ("bob", "web.site$x", "lost"),
            ("Zoë", None, "new"),
            ("Ann", "ads", "contacted"),
            ("Émile", "web", "new"),
        ]
    ):
        fields = {"name": name, "email": f"c{i}@x.io", "status": status}
        if source is not None:
            fields["source"] = source
        made.append(await leads_repo.create(chatbot_id=cb, workspace_id=ws, fields=fields))
    await leads_repo.update(chatbot_id=cb, lead_id=made[0]["id"], changes={"status": "lost"})
    await leads_repo.update(chatbot_id=cb, lead_id=made[1]["id"], changes={"source": "ads"})
    await leads_repo.update(chatbot_id=cb, lead_id=made[2]["id"], changes={"source": "web"})
    await leads_repo.update(
        chatbot_id=cb, lead_id=made[4]["id"], changes={"source": None, "name": "Aaron"}
    )
    await leads_repo.delete(chatbot_id=cb, lead_id=made[3]["id"], audit={})
    expected = {"web": {"lost": 1, "new": 1}, "ads": {"lost": 1}}

    def nonzero(by_source):
        return {
            source: {s: n for s, n in statuses.items() if n}
            for source, statuses in by_source.items()
            if any(statuses.values())
        }

    counts = await leads_repo.read_counts(cb)
    assert nonzero(counts["bySource"]) == expected
    bounds = counts["bounds"]
    assert (bounds.name_low, bounds.name_high) == ("a", "{")  # "aaron" and "zoë": a-z
    names = [d["nameSort"] async for d in mongo.db["leads"].find({"chatbotId": cb})]
    assert all(bounds.name_low <= name < bounds.name_high for name in names)
    assert bounds.first_at == min(
        [d["createdAt"] async for d in mongo.db["leads"].find({"chatbotId": cb})]
    )
    await leads_repo.recount(chatbot_id=cb)
    counts = await leads_repo.read_counts(cb)
    assert nonzero(counts["bySource"]) == expected
    assert (counts["bounds"].name_low, counts["bounds"].name_high) == ("a", "{")


async def test_name_bounds_written_before_they_were_coarse_are_made_coarse_once(
    leads_repo, accounts, mongo
):
    """Shards an earlier version wrote hold names as bounds: at start-up they are made
    coarse, once per database, and lists sorted by name read the same leads."""
    tenant = await make_tenant(accounts)
    cb, ws = tenant.chatbot_id, tenant.workspace_id
    for name in ("Mia Secretname", "Émile Hidden"):
        await leads_repo.create(
            chatbot_id=cb, workspace_id=ws, fields={"name": name, "email": "m@x.io"}
        )
    shards = mongo.db["lead_counts"]
    # As an earlier version kept them: the lowest and highest names themselves.
    await shards.update_many(
        {"chatbotId": cb}, {"$set": {"nameLow": "emile hidden", "nameHigh": "mia secretname"}}
    )
    migrations = mongo.db["migrations"]
    await migrations.delete_many({"_id": counters.COARSE_NAMES})
    assert await leads_repo.coarsen_name_bounds() >= 1
    async for shard in shards.find({"chatbotId": cb}):
        assert (shard["nameLow"], shard["nameHigh"]) == ("e", "n")
    assert await migrations.find_one({"_id": counters.COARSE_NAMES})
    await shards.update_many({"chatbotId": cb}, {"$set": {"nameLow": "emile hidden"}})
    assert await leads_repo.coarsen_name_bounds() == 0  # once per database
    await shards.update_many({"chatbotId": cb}, {"$set": {"nameLow": "e"}})
    page = await leads_repo.list(chatbot_id=cb, query=LeadQuery(sort="name"))
    assert [lead["name"] for lead in page.leads] == ["Émile Hidden", "Mia Secretname"]


async def test_counters_from_before_sources_were_counted_are_not_trusted_by_source(
    leads_repo, accounts, mongo
):
    """A shard written before counts by source existed (no ``sourcesCounted``) makes a
    source-filtered list count its leads, until a recount."""
    tenant = await make_tenant(accounts)
    cb, ws = tenant.chatbot_id, tenant.workspace_id
    for i in range(3):
        fields = {"name": f"L{i}", "email": f"o{i}@x.io", "source": "web"}
        await leads_repo.create(chatbot_id=cb, workspace_id=ws, fields=fields)
    await mongo.db["lead_counts"].insert_one(
        {"_id": f"{cb}:99", "chatbotId": cb, "total": 0, "byStatus": {"new": 0}}
    )
    assert "bySource" not in await leads_repo.read_counts(cb)
    page = await leads_repo.list(chatbot_id=cb, query=LeadQuery(sources=("web",)))
    assert page.total == 3 and len(page.leads) == 3
    await leads_repo.recount(chatbot_id=cb)
    assert (await leads_repo.read_counts(cb))["bySource"] == {"web": {"new": 3}}


async def test_a_shard_past_its_sources_stops_counting_them_and_totals_stay_exact(
    leads_repo, accounts, mongo, monkeypatch
):
    """Sources are free text: a shard holding more than SOURCES_KEPT of them no longer
    counts by source (nor grows), and lists filtered by source count their leads."""
    monkeypatch.setattr(counters, "SOURCES_KEPT", 1)
    tenant = await make_tenant(accounts)
    cb, ws = tenant.chatbot_id, tenant.workspace_id
    for i in range(counters.SHARDS + 8):  # more sources than shards: one shard gets two
        fields = {"name": f"S{i}", "email": f"s{i}@x.io", "source": f"campaign-{i % 36}"}
        await leads_repo.create(chatbot_id=cb, workspace_id=ws, fields=fields)
    assert "bySource" not in await leads_repo.read_counts(cb)
    shards = [d async for d in mongo.db["lead_counts"].find({"chatbotId": cb})]
    assert all(len(d.get("sourceKeys", [])) <= 1 for d in shards)
    page = await leads_repo.list(chatbot_id=cb, query=LeadQuery(sources=("campaign-3",)))
    assert page.total == 2 and {lead["name"] for lead in page.leads} == {"S3", "S39"}
    await leads_repo.recount(chatbot_id=cb)  # 36 sources, past the limit: still not
    assert "bySource" not in await leads_repo.read_counts(cb)
    monkeypatch.setattr(counters, "SOURCES_KEPT", 500)
    await leads_repo.recount(chatbot_id=cb)
    assert (await leads_repo.read_counts(cb))["bySource"]["campaign-3"] == {"new": 2}


async def test_an_update_and_a_delete_committed_together_leave_only_redacted_events(
    leads_repo, accounts, mongo
):
    """The update's event, written in the deleting transaction, is stored redacted, as
    are the events before it; a kept result of the update (in the same transaction)
    is dropped."""
    tenant = await make_tenant(accounts)
    cb, ws = tenant.chatbot_id, tenant.workspace_id
    lead = await leads_repo.create(
        chatbot_id=cb, workspace_id=ws, fields={"name": "Ada Secret", "email": "ada@x.io"}
    )
    store = IdempotencyStore(mongo.db)
    lease = await store.begin(scope="k", key=str(uuid.uuid4()), fingerprint="f")
    assert isinstance(lease, Lease)
    outcomes = await leads_repo.write(
        chatbot_id=cb,
        workspace_id=ws,
        writes=[
            LeadWrite(UPDATE, {"name": "Ada Renamed"}, lead["id"]),
            LeadWrite(DELETE, {}, lead["id"], audit={}),
        ],
        receipt=Receipt(lease, OneLead("r")),
    )
    assert isinstance(outcomes[0], Written) and isinstance(outcomes[1], Deleted)
    events = await mongo.db["events"].find({"chatbotId": cb}, sort=[("sequence", 1)]).to_list()
    gone = {"lead": {"id": lead["id"]}}
    assert [(e["type"], e["data"]) for e in events] == [
        ("lead.created", {**gone, "redacted": True}),
        ("lead.updated", {**gone, "redacted": True}),
        ("lead.deleted", gone),
    ]
    record = await mongo.db["idempotency_keys"].find_one({"_id": lease.record_id})
    assert record["state"] == "gone" and "response" not in record


async def test_releasing_a_key_its_write_still_holds_returns_at_once(mongo):
    """A failed batch's transaction may still hold the key's record when its request
    releases the key (the abort lands later). The release does not wait for it in the
    store (a plain delete did, retried by the embedded store for as long as the
    transaction lived, the store's lock queued behind it): it leaves the record running,
    for its lease to run out."""
    store = IdempotencyStore(mongo.db, transaction=mongo.transaction)
    lease = await store.begin(scope="key_r", key=uuid.uuid4().hex, fingerprint="f")
    assert isinstance(lease, Lease)
    records = mongo.db["idempotency_keys"]
    held = asyncio.get_running_loop().create_future()

    async def write(session):
        await records.update_one({"_id": lease.record_id}, {"$set": {"x": 1}}, session=session)
        await held

    holding = asyncio.ensure_future(mongo.transaction(write))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    try:
        with store_deadline(5.0):
            await store.release(lease)
        assert time.monotonic() - started < 1.0
    finally:
        held.set_result(None)
        await holding
    record = await records.find_one({"_id": lease.record_id})
    assert record["state"] == "running" and record["x"] == 1  # left for its lease
    # With nothing holding it, a release forgets it.
    await store.release(lease)
    assert await records.find_one({"_id": lease.record_id}) is None
