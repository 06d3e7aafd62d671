from collections.abc import Iterator
from datetime import timedelta

import pytest
from pymongo import ASCENDING, IndexModel

from pollybot_leads.indexes import ensure_all_indexes as ensure_indexes
from pollybot_leads.leads.indexes import LEAD_INDEXES
from pollybot_leads.store.client import Mongo
from pollybot_leads.store.embedded import EmbeddedStore, free_port
from pollybot_leads.timeutil import utcnow
from pollybot_leads.webhooks.repository import WEBHOOK_RETIRED_INDEXES as RETIRED_INDEXES
from tests.storage.test_query_plans import CommandCounter, counted_mongo


async def test_ensure_indexes_is_idempotent_and_rebuilds_changed_ones(mongo):
    await ensure_indexes(mongo)
    leads = mongo.db["leads"]
    await leads.drop_index("by_email")
    await leads.create_indexes(
        [IndexModel([("chatbotId", ASCENDING), ("email", ASCENDING)], name="by_email")]
    )  # an older definition
    await ensure_indexes(mongo)
    await ensure_indexes(mongo)
    info = await leads.index_information()
    for model in LEAD_INDEXES:
        doc = model.document
        assert [tuple(k) for k in info[doc["name"]]["key"]] == list(doc["key"].items())


async def test_indexes_no_query_uses_any_more_are_dropped(mongo):
    """A database an earlier version indexed loses the indexes it no longer reads by."""
    deliveries = mongo.db["webhook_deliveries"]
    await deliveries.create_indexes(
        [IndexModel([("state", ASCENDING), ("dueAt", ASCENDING)], name="due")]
    )  # as the first webhook version made it
    await ensure_indexes(mongo)
    await ensure_indexes(mongo)  # nothing left to drop: no error either
    for collection, names in RETIRED_INDEXES.items():
        assert not set(names) & set(await mongo.db[collection].index_information())
    assert "by_webhook" in await deliveries.index_information()


EXPIRY_INDEXES = {
    ("events", "expiry"): "events",
    ("webhook_deliveries", "expiry"): "delivery_logs",
    ("webhook_attempts", "expiry"): "delivery_logs",
    ("audit_log", "expiry"): "audit",
    ("idempotency_keys", "expiry"): "idempotency",
    ("merge_tombstones", "expiry"): "merge_tombstones",
}


async def expiries_of(mongo) -> dict[tuple[str, str], int]:
    found = {}
    for collection, name in EXPIRY_INDEXES:
        info = await mongo.db[collection].index_information()
        found[collection, name] = info[name]["expireAfterSeconds"]
    return found


async def test_each_retention_setting_is_its_expiry_index_changed_in_place(mongo, settings):
    """A changed retention changes the expiry of its index with collMod: no index is
    dropped or built again (a build of the events' index would read every event)."""
    assert settings.retention_seconds == {
        "events": 30 * 86400,
        "delivery_logs": 30 * 86400,
        "audit": 365 * 86400,
        "idempotency": 24 * 3600,
        "merge_tombstones": 30 * 86400,
    }
    await ensure_indexes(mongo, settings)
    assert await expiries_of(mongo) == {
        index: settings.retention_seconds[kind] for index, kind in EXPIRY_INDEXES.items()
    }
    before = {c: await mongo.db[c].index_information() for c, _ in EXPIRY_INDEXES}
    changed = settings.replace(
        retention_events_days=45,
        retention_delivery_logs_days=7,
        retention_audit_days=730,
        retention_idempotency_hours=72,
        retention_merge_tombstones_days=60,
    )
    counter = CommandCounter()
    try:
        async with counted_mongo(settings, counter) as counted:
            await ensure_indexes(counted, changed)
            # Dropped: the retired indexes (already gone: each drop finds nothing), no other.
            retired = sum(len(names) for names in RETIRED_INDEXES.values())
            assert counter.names.count("collMod") == 6
            assert counter.names.count("dropIndexes") == retired
            counter.names.clear()
            await ensure_indexes(counted, changed)  # as another process starting
            assert "collMod" not in counter.names
            assert counter.names.count("dropIndexes") == retired
        day = 86400
        assert await expiries_of(mongo) == {
            ("events", "expiry"): 45 * day,
            ("webhook_deliveries", "expiry"): 7 * day,
            ("webhook_attempts", "expiry"): 7 * day,
            ("audit_log", "expiry"): 730 * day,
            ("idempotency_keys", "expiry"): 72 * 3600,
            ("merge_tombstones", "expiry"): 60 * day,
        }
        for collection, _ in EXPIRY_INDEXES:  # the same indexes, only the expiry moved
            after = await mongo.db[collection].index_information()
            assert set(after) == set(before[collection])
            for name, info in after.items():
                assert info["key"] == before[collection][name]["key"]
    finally:
        await ensure_indexes(mongo, settings)
    assert await expiries_of(mongo) == {
        index: settings.retention_seconds[kind] for index, kind in EXPIRY_INDEXES.items()
    }


async def test_a_changed_key_under_an_expiry_name_is_still_rebuilt(mongo, settings):
    audit = mongo.db["audit_log"]
    await audit.drop_index("expiry")
    await audit.create_indexes(
        [IndexModel([("createdAt", ASCENDING)], name="expiry", expireAfterSeconds=60)]
    )  # another field under the name: not a change of expiry alone
    await ensure_indexes(mongo, settings)
    info = (await audit.index_information())["expiry"]
    assert info["key"] == [("at", 1)] and info["expireAfterSeconds"] == 365 * 86400


@pytest.fixture
def own_store(tmp_path) -> Iterator[str]:
    """A SecantusDB of the test's own: its expiry pass removes only this test's records."""
    store = EmbeddedStore(tmp_path / "store", free_port())
    store.start()
    try:
        yield store.uri
    finally:
        store.discard()


async def test_the_store_removes_each_kind_of_record_past_its_retention(own_store, settings):
    """Enforced by the store itself: a record past its kind's retention goes, one inside
    it stays, with the default expiries and after a change of them. The store's expiry
    pass runs every 60 s (as mongod's); SecantusDB runs one at once when asked
    (``secantusAdmin.pruneTtl``), which the test does instead of waiting."""
    mongo = Mongo(own_store, "retention")
    await mongo.connect()
    try:
        await ensure_indexes(mongo, settings)
        now = utcnow()
        day, hour = timedelta(days=1), timedelta(hours=1)
        docs = {  # collection: (time field, age past its default retention, age inside)
            "events": ("createdAt", 31 * day, 29 * day),
            "webhook_deliveries": ("queuedAt", 31 * day, 29 * day),
            "webhook_attempts": ("at", 31 * day, 29 * day),
            "audit_log": ("at", 366 * day, 364 * day),
            "idempotency_keys": ("createdAt", 25 * hour, 23 * hour),
        }
        for collection, (field, old, young) in docs.items():
            await mongo.db[collection].insert_many(
                [
                    {"_id": "old", field: now - old, "chatbotId": "cb", "sequence": 1},
                    {"_id": "young", field: now - young, "chatbotId": "cb", "sequence": 2},
                ]
            )
        await wait_for_only(mongo, docs, "young")
        # Shorter retention: the young ones are now past it (events may not be shorter
        # than the webhook retries: those have a shorter retry window here).
        shorter = settings.replace(
            webhook_retry_for_seconds=3600,
            retention_events_days=28,
            retention_delivery_logs_days=28,
            retention_audit_days=363,
            retention_idempotency_hours=22,
        )
        await ensure_indexes(mongo, shorter)
        await wait_for_only(mongo, docs, None)
    finally:
        await mongo.close()


async def wait_for_only(mongo, docs, kept: str | None) -> None:
    """The store's expiry pass, then only ``kept`` (or nothing) in each collection."""
    await mongo.client.admin.command("secantusAdmin.pruneTtl")
    left = {c: sorted(await mongo.db[c].distinct("_id")) for c in docs}
    assert left == {c: [kept] if kept else [] for c in docs}
