"""Each SecantusDB workaround in store/quirks.py is still needed, and only there.

On SecantusDB these tests show each quirk is still there: the day one fails, its flag
(and its workaround) can go. Against a real mongod (MONGODB_URI) the quirks are off.
"""

from datetime import UTC, datetime, timedelta

import pytest

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
