"""The delivery queue at the store: fan-out is idempotent, targets are checked at send."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
from datetime import timedelta

from pollybot_leads.errors import ServiceUnavailable
from pollybot_leads.timeutil import utcnow
from pollybot_leads.webhooks.deliveries import DeliveryQueue
from pollybot_leads.webhooks.pending import PendingWindow
from tests.conftest import database_of, make_tenant
from tests.dns import EMBEDDING_FORMS, resolve_names

from .conftest import FAST, emit
from .receiver import Receiver


async def test_fanning_out_again_after_a_crash_makes_no_duplicates(mongo, accounts, webhooks):
    tenant = await make_tenant(accounts)
    for _ in range(2):
        await webhooks.create(
            workspace_id=tenant.workspace_id,
            url="https://example.com/hook",
            events=["lead.created"],
            chatbot_ids=[],
            description=None,
            enabled=False,  # nothing is sent: this test reads the queue
        )
    queue = DeliveryQueue(mongo)
    await webhooks.update(
        workspace_id=tenant.workspace_id,
        webhook_id=(await webhooks.list(workspace_id=tenant.workspace_id))[0]["id"],
        changes={"enabled": True},
    )
    events = await emit(mongo, tenant, n=3)
    ids = [e["_id"] for e in events]
    assert await queue.fan_out() == 3  # one endpoint is enabled
    # A crash after the deliveries were written, before the events lost `pending`:
    for event in events:
        await mongo.db["events"].update_one(
            {"_id": event["_id"]}, {"$set": {"pending": event["createdAt"]}}
        )
    # ...and two dispatchers redo it at once.
    made = await asyncio.gather(queue.fan_out(), queue.fan_out())
    assert sum(made) == 0
    stored = await mongo.db["webhook_deliveries"].count_documents({"eventId": {"$in": ids}})
    assert stored == 3
    left = {"_id": {"$in": ids}, "pending": {"$exists": True}}
    assert await mongo.db["events"].count_documents(left) == 0


async def test_events_marked_pending_by_earlier_versions_are_fanned_out(mongo, accounts, webhooks):
    """Earlier versions marked a pending event ``pending: true``; a dispatcher of this one
    takes them first (their own query), then its window."""
    tenant = await make_tenant(accounts)
    await webhooks.create(
        workspace_id=tenant.workspace_id,
        url="https://example.com/hook",
        events=["lead.created"],
        chatbot_ids=[],
        description=None,
    )
    old, new = await emit(mongo, tenant, n=2)
    await mongo.db["events"].update_one({"_id": old["_id"]}, {"$set": {"pending": True}})
    queue = DeliveryQueue(mongo)
    for _ in range(5):
        await queue.fan_out()
    ids = [old["_id"], new["_id"]]
    assert await mongo.db["webhook_deliveries"].count_documents({"eventId": {"$in": ids}}) == 2
    left = {"_id": {"$in": ids}, "pending": {"$exists": True}}
    assert await mongo.db["events"].count_documents(left) == 0


async def test_private_targets_are_refused_when_sending(mongo, accounts, webhooks, run_worker):
    """Stored before the rule applied (or resolving differently now): checked at send."""
    tenant = await make_tenant(accounts)
    receiver = await Receiver().start()
    try:
        made = []
        for url in (receiver.url, receiver.url.replace("127.0.0.1", "localhost")):
            endpoint, _ = await webhooks.create(
                workspace_id=tenant.workspace_id,
                url=url,
                events=["lead.created"],
                chatbot_ids=[],
                description=None,
            )
            made.append(endpoint["id"])
        await emit(mongo, tenant)
        run_worker(dataclasses.replace(FAST, allow_private=False))
        attempts = mongo.db["webhook_attempts"]
        for _ in range(200):
            if await attempts.count_documents({"webhookId": {"$in": made}}) >= 2:
                break
            await asyncio.sleep(0.02)
        errors = {
            doc["webhookId"]: doc["error"]
            async for doc in attempts.find({"webhookId": {"$in": made}})
        }
        assert "127.0.0.1 is a loopback address" in errors[made[0]]
        assert "localhost resolves to a refused address" in errors[made[1]]
        assert receiver.received == []
    finally:
        await receiver.stop()


async def test_ipv6_addresses_carrying_a_refused_ipv4_are_refused_when_sending(
    mongo, accounts, webhooks, run_worker, monkeypatch
):
    """A name that resolves, at send time, to an IPv6 address carrying a refused IPv4
    address (6to4, NAT64, Teredo, IPv4-mapped, -compatible, -translated) is not sent to."""
    tenant = await make_tenant(accounts)
    resolve_names(monkeypatch, {host: address for host, address, _ in EMBEDDING_FORMS})
    made = {}
    for host, _, inner in EMBEDDING_FORMS:
        endpoint, _ = await webhooks.create(
            workspace_id=tenant.workspace_id,
            url=f"https://{host}/hook",
            events=["lead.created"],
            chatbot_ids=[],
            description=None,
        )
        made[endpoint["id"]] = (host, inner)
    await emit(mongo, tenant)
    worker = run_worker(dataclasses.replace(FAST, allow_private=False))
    attempts = mongo.db["webhook_attempts"]
    errors: dict[str, str] = {}
    for _ in range(500):  # each endpoint's first attempt (a refusal is retried: more follow)
        errors = {
            doc["webhookId"]: doc["error"]
            async for doc in attempts.find({"webhookId": {"$in": list(made)}})
        }
        if len(errors) == len(made):
            break
        await asyncio.sleep(0.02)
    worker.stop()  # its refused deliveries, due again, would crowd the next tests' claims
    await mongo.db["webhook_deliveries"].delete_many({"webhookId": {"$in": list(made)}})
    assert set(errors) == set(made)
    for webhook_id, (host, inner) in made.items():
        assert f"Refused target: {host} resolves to a refused address" in errors[webhook_id]
        assert f"of {inner}, a " in errors[webhook_id]


async def insert_pending(events, times) -> None:
    """Events not yet fanned out, one per time in ``times``, as the event log writes them."""
    await events.insert_many(
        [
            {
                "_id": f"evt_{i:016x}",
                "chatbotId": "cb_backlog",
                "workspaceId": "ws_backlog",
                "sequence": i + 1,
                "type": "lead.created",
                "createdAt": at,
                "data": {"lead": {"id": f"ld_{i:016x}"}},
                "pending": at,
            }
            for i, at in enumerate(times)
        ]
    )


async def test_reads_of_a_backlog_examine_their_window_not_the_backlog(settings):
    """2,000 events written while no dispatcher ran (over 35 minutes after the last one
    stopped), 100 more just now: every read the dispatcher sends examines at most one
    window's worth (explained at executionStats as it is sent), and all are fanned out.
    A read of all pending events with a limit examines every one on SecantusDB 0.7."""
    own = settings.replace(mongodb_database=f"{settings.mongodb_database}_backlog")
    async with database_of(own) as mongo:
        now = utcnow()
        stopped = now - timedelta(minutes=50)  # where the last dispatcher left off
        await mongo.db["webhook_dispatch"].insert_one({"_id": "pending", "low": stopped})
        times = [stopped + timedelta(seconds=i) for i in range(2000)]  # the first at low
        times += [now - timedelta(milliseconds=10 * i) for i in range(100)]
        events = mongo.db["events"]
        await insert_pending(events, times)
        window = PendingWindow(mongo.db)
        examined, fanned = [], 0
        for _ in range(200):
            batch = await window.read(utcnow())
            for filter_ in batch.filters:
                plan = await mongo.db.command(
                    "explain",
                    {"find": "events", "filter": filter_, "limit": window.limit},
                    verbosity="executionStats",
                )
                stats = plan["executionStats"]
                examined.append((stats["totalKeysExamined"], stats["totalDocsExamined"]))
            ids = [e["_id"] for e in batch.events]
            await events.update_many({"_id": {"$in": ids}}, {"$unset": {"pending": ""}})
            fanned += len(ids)
            await window.passed(batch, utcnow())
            if not window.behind:
                break
        assert fanned == len(times)
        assert await events.count_documents({"pending": {"$exists": True}}) == 0
        # +1: mongod counts the key that ends the range.
        assert max(keys for keys, _ in examined) <= window.limit + 1, examined
        assert max(docs for _, docs in examined) <= window.limit + 1, examined
        assert sum(docs for _, docs in examined) < 2 * len(times), examined


async def test_a_delivery_held_by_an_open_transaction_does_not_stop_the_others(
    mongo, accounts, webhooks
):
    """As a process killed inside a claim leaves it: its transaction holds the delivery
    until the store ends it. A claim leases the others and leaves that one alone."""
    tenant = await make_tenant(accounts)
    endpoint, _ = await webhooks.create(
        workspace_id=tenant.workspace_id,
        url="https://example.com/hook",
        events=["lead.created"],
        chatbot_ids=[tenant.chatbot_id],
        description=None,
    )
    events = await emit(mongo, tenant, n=3)
    queue = DeliveryQueue(mongo)
    while await queue.fan_out():
        pass
    ids = [f"{endpoint['id']}:{e['_id']}" for e in events]
    deliveries = mongo.db["webhook_deliveries"]
    session = mongo.client.start_session()
    if inspect.isawaitable(session):  # motor: a coroutine; PyMongo: the session
        session = await session
    started = session.start_transaction()
    if inspect.isawaitable(started):  # PyMongo: a coroutine; motor: not
        await started
    try:
        await deliveries.update_one({"_id": ids[0]}, {"$set": {"held": True}}, session=session)
        claimed = await queue.claim(limit=16, lease_seconds=30)
        mine = sorted(d["_id"] for d in claimed if d["webhookId"] == endpoint["id"])
        assert mine == sorted(ids[1:])
        again = await queue.claim(limit=16, lease_seconds=30)  # left alone, not retried
        assert all(d["_id"] != ids[0] for d in again)
    finally:
        await session.abort_transaction()
        await session.end_session()


async def test_a_slow_endpoints_backlog_does_not_hold_back_the_others(mongo, accounts, webhooks):
    """Endpoint A has 100 due deliveries older than B's one, and room for 2 more in
    flight: a claim takes 2 of A's and B's, not only A's oldest."""
    tenant = await make_tenant(accounts)
    made = []
    for kind in ("lead.created", "lead.updated"):
        endpoint, _ = await webhooks.create(
            workspace_id=tenant.workspace_id,
            url="https://example.com/hook",
            events=[kind],
            chatbot_ids=[tenant.chatbot_id],
            description=None,
        )
        made.append(endpoint["id"])
    slow, other = made
    await emit(mongo, tenant, n=100)
    await emit(mongo, tenant, kind="lead.updated", data={"lead": {"id": "ld_0"}, "changes": {}})
    queue = DeliveryQueue(mongo)
    while await queue.fan_out():
        pass
    claimed = await queue.claim(
        limit=8, lease_seconds=30, room=lambda webhook_id: 2 if webhook_id in made else 0
    )
    by_endpoint = [d["webhookId"] for d in claimed]
    assert by_endpoint.count(slow) == 2
    assert by_endpoint.count(other) == 1


async def test_fan_outs_take_a_few_events_each_and_miss_none(settings):
    """The dispatcher asks for short fan-outs (a limit of its own per read, so that each
    fan-out writes at most that many events' deliveries): 120 pending
    events come in reads of at most 50, and every event is read once."""
    own = settings.replace(mongodb_database=f"{settings.mongodb_database}_short")
    async with database_of(own) as mongo:
        now = utcnow()
        await mongo.db["webhook_dispatch"].insert_one(
            {"_id": "pending", "low": now - timedelta(minutes=1)}
        )
        events = mongo.db["events"]
        await insert_pending(events, [now - timedelta(milliseconds=100 * i) for i in range(120)])
        window = PendingWindow(mongo.db)
        read: list[str] = []
        for _ in range(100):
            batch = await window.read(utcnow(), limit=50)
            assert len(batch.events) <= 50
            ids = [e["_id"] for e in batch.events]
            read += ids
            await events.update_many({"_id": {"$in": ids}}, {"$unset": {"pending": ""}})
            await window.passed(batch, utcnow())
            if not window.behind:
                break
        assert sorted(read) == sorted(f"evt_{i:016x}" for i in range(120))


async def test_fanning_out_beside_a_deletion_in_flight_never_wedges_the_store(
    mongo, accounts, webhooks
):
    """A deletion's transaction redacts the lead's earlier events, then appends its own
    to the same collection; the dispatcher marks the same events fanned out meanwhile.
    Found in a soak (docs/load.md, section 5): on the embedded store a multi-document
    update outside a transaction retries its write conflicts while holding the
    collection, so the transaction's next write there waited for it, and it for the
    transaction, for ever (every write of the store stalled behind them). The marks are
    made in a transaction of their own: a conflict fails them at once, and they are made
    again later."""
    tenant = await make_tenant(accounts)
    (event,) = await emit(mongo, tenant)
    events = mongo.db["events"]
    log_later = asyncio.get_running_loop().create_future()

    async def deletion(session):
        await events.update_one(
            {"_id": event["_id"]}, {"$set": {"data.redacted": True}}, session=session
        )
        await log_later  # the dispatcher's mark is on its way meanwhile
        async with asyncio.timeout(10):  # the deadlock: for ever
            await events.insert_one({"_id": f"evt_after_{event['_id']}"}, session=session)

    queue = DeliveryQueue(mongo)
    deleting = asyncio.ensure_future(mongo.transaction(deletion))
    await asyncio.sleep(0.2)  # the redaction is written, not committed
    fanning = asyncio.ensure_future(queue.fan_out())
    await asyncio.sleep(0.5)  # the mark reached the store (and conflicted)
    log_later.set_result(None)
    await deleting  # committed: its write was not held up
    with contextlib.suppress(Exception):  # a conflicting mark fails; it is made again
        await asyncio.wait_for(fanning, 10)
    for _ in range(3):
        await queue.fan_out()
    stored = await events.find_one({"_id": event["_id"]})
    assert stored["data"]["redacted"] is True
    assert "pending" not in stored  # marked in the end
    assert await events.find_one({"_id": f"evt_after_{event['_id']}"}) is not None


async def test_deleting_an_endpoint_beside_a_sender_transaction_never_wedges_the_store(
    mongo, accounts, webhooks
):
    """The sender changes deliveries in transactions of several statements; an endpoint's
    deletion removes its deliveries meanwhile. Outside a transaction that removal would
    retry its conflict with the sender while holding the collection the sender's next
    statement needs (docs/load.md, section 5); in chunked transactions of its own a
    conflict fails it at once, and the sender's transaction goes on."""
    tenant = await make_tenant(accounts)
    endpoint, _secret = await webhooks.create(
        workspace_id=tenant.workspace_id,
        url="https://example.com/hook",
        events=["lead.created"],
        chatbot_ids=[],
        description=None,
    )
    queue = DeliveryQueue(mongo)
    await emit(mongo, tenant, n=2)
    assert await queue.fan_out() == 2
    deliveries = mongo.db["webhook_deliveries"]
    ids = [d["_id"] async for d in deliveries.find({"webhookId": endpoint["id"]})]
    assert len(ids) == 2
    second_statement = asyncio.get_running_loop().create_future()

    async def sender(session):
        await deliveries.update_one({"_id": ids[0]}, {"$inc": {"attempts": 1}}, session=session)
        await second_statement
        async with asyncio.timeout(10):  # the wedge: for ever
            await deliveries.update_one({"_id": ids[1]}, {"$inc": {"attempts": 1}}, session=session)

    sending = asyncio.ensure_future(mongo.transaction(sender))
    await asyncio.sleep(0.2)
    deleting = asyncio.ensure_future(
        webhooks.delete(workspace_id=tenant.workspace_id, webhook_id=endpoint["id"])
    )
    await asyncio.sleep(0.5)
    second_statement.set_result(None)
    await sending  # committed: not held up by the deletion
    with contextlib.suppress(ServiceUnavailable):  # it conflicted: 503, retried by the client
        await asyncio.wait_for(deleting, 10)
    stored = {d["_id"]: d async for d in deliveries.find({"_id": {"$in": ids}})}
    assert all(doc["attempts"] == 1 for doc in stored.values())  # none lost if still there
    # The endpoint is gone; what the deletion left is removed by a second one (404 now
    # for the endpoint) or dropped by the sender.
    assert await mongo.db["webhooks"].find_one({"_id": endpoint["id"]}) is None
