"""Each SecantusDB workaround in store/quirks.py is still needed, and only there.

On SecantusDB these tests show each quirk is still there: the day one fails, its flag
(and its workaround) can go. Against a real mongod (MONGODB_URI) the quirks are off.
"""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from pollybot_leads.store.lookups import increment
from pollybot_leads.store.quirks import PLAIN, SECANTUS_0_7, quirks_for


def stages(plan) -> list[str]:
    """Every stage name anywhere in an explain document."""
    if isinstance(plan, dict):
        own = [plan["stage"]] if isinstance(plan.get("stage"), str) else []
        return own + [name for value in plan.values() for name in stages(value)]
    if isinstance(plan, list):
        return [name for item in plan for name in stages(item)]
    return []


def test_quirks_are_chosen_from_build_info():
    assert quirks_for({"version": "8.0.4"}) == PLAIN.__class__(server="mongod 8.0.4")
    assert not quirks_for({"version": "8.0.4"}).any
    secantus = quirks_for({"version": "8.2.11", "secantusVersion": "0.7.0b3"})
    assert secantus.server == "secantusdb 0.7.0b3"
    assert secantus.id_lookup_alone and secantus.index_only_filters
    assert secantus.exclusive_time_bounds


@pytest.fixture(scope="module")
async def secantus(mongo):
    if not mongo.quirks.any:
        pytest.skip("a plain MongoDB: no workarounds are in use")
    assert mongo.quirks.id_lookup_alone == SECANTUS_0_7.id_lookup_alone
    coll = mongo.db["quirk_probe"]
    await coll.drop()
    await coll.create_index([("t", 1), ("k", -1), ("_id", -1)])
    base = datetime(2024, 1, 1, tzinfo=UTC)
    await coll.insert_many(
        [
            {"_id": f"d{i:04d}", "t": "a" if i % 2 else "b", "k": base + timedelta(milliseconds=i)}
            for i in range(400)
        ]
    )
    yield coll, base
    await coll.drop()


async def _explain(coll, filter_):
    db = coll.database
    plan = await db.command(
        "explain", {"find": coll.name, "filter": filter_}, verbosity="executionStats"
    )
    return stages(plan["queryPlanner"]), plan["executionStats"]


async def test_id_with_another_condition_scans_the_collection(secantus):
    coll, _ = secantus
    names, stats = await _explain(coll, {"_id": "d0001"})
    assert stats["totalDocsExamined"] <= 1
    names, stats = await _explain(coll, {"_id": "d0001", "t": "a"})
    assert "COLLSCAN" in names and stats["totalDocsExamined"] == 400


async def test_in_beside_a_range_scans_the_collection(secantus):
    coll, base = secantus
    near = {"$gt": base + timedelta(milliseconds=390)}
    names, stats = await _explain(coll, {"t": "a", "k": near})
    assert "COLLSCAN" not in names and stats["totalDocsExamined"] <= 10
    names, stats = await _explain(coll, {"t": {"$in": ["a", "b"]}, "k": near})
    assert "COLLSCAN" in names and stats["totalDocsExamined"] == 400


async def test_inclusive_far_bound_drops_equal_keys(secantus):
    coll, base = secantus
    low, high = base + timedelta(milliseconds=11), base + timedelta(milliseconds=21)
    exclusive = {
        "t": "a",
        "k": {"$gt": low - timedelta(milliseconds=1), "$lt": high + timedelta(milliseconds=1)},
    }
    inclusive = {"t": "a", "k": {"$gte": low, "$lte": high}}
    expected = [f"d{i:04d}" for i in range(11, 22, 2)]
    assert [d["_id"] async for d in coll.find(exclusive).sort("k", 1)] == expected
    got = [d["_id"] async for d in coll.find(inclusive).sort("k", 1)]
    # SecantusDB 0.7 loses leads equal to the far bound of a descending index range.
    assert set(got) < set(expected)


async def test_a_limit_does_not_stop_an_index_scan(secantus):
    """Why the webhook dispatcher reads pending events a window at a time, and lists
    sorted oldest first or by name read in windows (quirks.limit_reads_whole_range)."""
    coll, _ = secantus
    assert SECANTUS_0_7.limit_reads_whole_range and not PLAIN.limit_reads_whole_range
    db = coll.database
    plan = await db.command(
        "explain",
        {"find": coll.name, "filter": {"t": "a"}, "limit": 10},
        verbosity="executionStats",
    )
    assert plan["executionStats"]["totalKeysExamined"] == 200  # every "a", not 10
    # The first key in index order, limit 1: still every key of the range.
    plan = await db.command(
        "explain",
        {"find": coll.name, "filter": {"t": "a"}, "sort": {"k": 1, "_id": 1}, "limit": 1},
        verbosity="executionStats",
    )
    assert plan["executionStats"]["totalKeysExamined"] == 200


async def test_find_and_modify_by_id_scans_the_collection(secantus, mongo):
    """Why the event sequence is taken by an update and a read in its transaction
    (quirks.find_and_modify_scans). The store's explain says IXSCAN for it, so its own
    profiler's times are compared: at 4,000 documents, findAndModify by ``_id`` costs the
    store many times an update and a read by ``_id`` (25 ms against under 1 ms here; 125
    ms at 20,000 documents)."""
    assert SECANTUS_0_7.find_and_modify_scans and not PLAIN.find_and_modify_scans
    coll = mongo.db["quirk_sequences"]
    await coll.drop()
    await coll.insert_many([{"_id": f"cb_{i:05d}", "last": 0} for i in range(4000)])
    db = coll.database
    await db.command("profile", 2)
    try:
        for _ in range(5):
            await coll.find_one_and_update({"_id": "cb_02000"}, {"$inc": {"last": 1}})
            await coll.update_one({"_id": "cb_02000"}, {"$inc": {"last": 1}})
            await coll.find_one({"_id": "cb_02000"})
    finally:
        await db.command("profile", 0)
    ms: dict[str, list[int]] = {"findAndModify": [], "update": [], "find": []}
    async for entry in db["system.profile"].find({"ns": coll.full_name}):
        name = next(iter(entry.get("command") or {"": 0}))  # the command's own name
        if name in ms:
            ms[name].append(entry["millis"])
    await db["system.profile"].drop()
    await coll.drop()
    assert all(len(times) == 5 for times in ms.values()), ms
    pair = sorted(u + f for u, f in zip(ms["update"], ms["find"], strict=True))[2]
    assert sorted(ms["findAndModify"])[2] >= 5 * max(pair, 1), ms


@pytest.mark.parametrize("quirks", [PLAIN, SECANTUS_0_7], ids=["plain", "secantus"])
async def test_increment_returns_each_new_value_once(mongo, quirks):
    """Either form, in transactions running at once: every value taken once, in order."""
    coll = mongo.db[f"quirk_increment_{quirks.find_and_modify_scans}"]
    await coll.drop()

    async def take(by: int) -> int:
        async def work(session):
            return await increment(coll, "seq", "last", by, quirks, session)

        return await mongo.transaction(work)

    taken = await asyncio.gather(*(take(2) for _ in range(10)))
    assert sorted(taken) == list(range(2, 21, 2))
    assert (await coll.find_one({"_id": "seq"}))["last"] == 20
    await coll.drop()
