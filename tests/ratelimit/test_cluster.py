"""The bucket on a real 3-master Redis Cluster when slots move under it.

Limiting itself runs on the cluster in test_redis_bucket.py (the ``cluster`` transport);
here a slot holding a bucket is migrated to another master, by hand, as ``redis-cli
--cluster reshard`` does it, and the bucket must follow without losing its count.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio.cluster import RedisCluster

from pollybot_leads.ratelimit.base import BucketPolicy
from pollybot_leads.ratelimit.redis_bucket import KEY_PREFIX, RedisTokenBucket
from pollybot_leads.ratelimit.resp_cluster import ClusterClient, key_slot
from tests.ratelimit.test_redis_bucket import CallSpy
from tests.redis_server import RedisCluster as RedisClusterProcesses
from tests.redis_server import RedisServer

FROZEN = 0.001
POLICY = BucketPolicy(capacity=10, refill_per_second=FROZEN)


@pytest.fixture
async def cluster(redis_cluster: RedisClusterProcesses) -> AsyncIterator[RedisClusterProcesses]:
    """The session's cluster, flushed (data and scripts) first."""
    first = redis_cluster.nodes[0]
    client = RedisCluster(host=first.host, port=first.port)
    try:
        await client.flushall()
        await client.script_flush()
    finally:
        await client.aclose()
    yield redis_cluster


def node_id(node: RedisServer) -> str:
    reply = node.command("CLUSTER", "MYID")  # $40\r\n<id>\r\n
    return reply.split(b"\r\n")[1].decode()


def ok(reply: bytes) -> None:
    assert reply.startswith((b"+OK", b"+NOKEY")), reply


def start_migration(cluster: RedisClusterProcesses, slot: int, key: str) -> RedisServer:
    """Mark ``slot`` migrating from its master to another and move ``key`` there: the
    source now answers ASK for it. Returns the target."""
    source = cluster.node_for_slot(slot)
    target = next(node for node in cluster.nodes if node is not source)
    ok(target.command("CLUSTER", "SETSLOT", str(slot), "IMPORTING", node_id(source)))
    ok(source.command("CLUSTER", "SETSLOT", str(slot), "MIGRATING", node_id(target)))
    ok(source.command("MIGRATE", target.host, str(target.port), key, "0", "5000"))
    return target


def finish_migration(cluster: RedisClusterProcesses, slot: int, target: RedisServer) -> None:
    """Give ``slot`` to ``target`` on every node: the old master now answers MOVED."""
    target_id = node_id(target)
    for node in [target, *(n for n in cluster.nodes if n is not target)]:
        ok(node.command("CLUSTER", "SETSLOT", str(slot), "NODE", target_id))
    cluster.wait_ok()


async def test_buckets_spread_over_the_masters(cluster: RedisClusterProcesses) -> None:
    limiter = RedisTokenBucket(cluster.url, timeout_ms=2000)
    try:
        names = [f"key:{n}" for n in range(30)]
        for name in names:
            assert (await limiter.take(name, POLICY)).remaining == 9
        client = limiter.client
        assert isinstance(client, ClusterClient)
        used = {client.node_for(KEY_PREFIX + name) for name in names}
        assert len(used) == 3  # 30 buckets: every master holds some
        for name in names:  # each where the cluster itself says its slot lives
            node = client.node_for(KEY_PREFIX + name)
            assert node is not None
            assert node.port == cluster.node_for_slot(key_slot(KEY_PREFIX + name)).port
    finally:
        await limiter.close()


async def test_a_moved_slot_is_followed_and_the_count_kept(
    cluster: RedisClusterProcesses,
) -> None:
    limiter = RedisTokenBucket(cluster.url, timeout_ms=2000)
    key = KEY_PREFIX + "moving"
    slot = key_slot(key)
    try:
        for left in (9, 8, 7):
            assert (await limiter.take("moving", POLICY)).remaining == left
        client = limiter.client
        assert isinstance(client, ClusterClient)
        before = client.node_for(key)
        refreshes = client.refreshes

        target = start_migration(cluster, slot, key)
        finish_migration(cluster, slot, target)  # the client's map is stale now

        moved = await limiter.take("moving", POLICY)  # MOVED, then sent to the new owner
        assert (moved.allowed, moved.remaining, moved.degraded) == (True, 6, False)
        after = client.node_for(key)
        assert after is not None and after is not before and after.port == target.port

        spy = CallSpy(client)
        for left in (5, 4, 3):
            assert (await limiter.take("moving", POLICY)).remaining == left
        assert [c.split()[0] for c in spy.commands] == ["EVALSHA"] * 3  # one trip each
        assert client.refreshes == refreshes + 1  # the map was fetched again, once
    finally:
        await limiter.close()


async def test_a_slot_being_migrated_is_asked_for(cluster: RedisClusterProcesses) -> None:
    limiter = RedisTokenBucket(cluster.url, timeout_ms=2000)
    key = KEY_PREFIX + "asking"
    slot = key_slot(key)
    target = None
    try:
        for left in (9, 8):
            assert (await limiter.take("asking", POLICY)).remaining == left
        client = limiter.client
        assert isinstance(client, ClusterClient)
        owner = client.node_for(key)

        target = start_migration(cluster, slot, key)  # the key left; the slot did not
        spy = CallSpy(client)
        asked = await limiter.take("asking", POLICY)
        assert (asked.allowed, asked.remaining, asked.degraded) == (True, 7, False)
        assert client.node_for(key) is owner  # ASK changes no map
        # One EVALSHA to the owner (answered ASK); ASKING + EVALSHA to the target in one write.
        assert [c.split()[0] for c in spy.commands] == ["EVALSHA"]
    finally:
        if target is not None:
            finish_migration(cluster, slot, target)
        await limiter.close()


async def test_a_hung_master_fails_its_takes_fast_and_readiness_until_it_answers(
    cluster: RedisClusterProcesses,
) -> None:
    limiter = RedisTokenBucket(cluster.url, timeout_ms=100, backoff_seconds=0.2)
    key = KEY_PREFIX + "hung"
    master = cluster.node_for_slot(key_slot(key))
    try:
        assert (await limiter.take("hung", POLICY)).remaining == 9
        assert await limiter.ping(0.5)
        master.pause()  # shorter than the cluster's node timeout: no failover
        try:
            start = time.perf_counter()
            decision = await limiter.take("hung", POLICY)
            assert decision.degraded and decision.allowed  # the "allow" policy
            assert time.perf_counter() - start < 0.3
            assert not await limiter.ping(0.1)  # readiness: one master is silent
        finally:
            master.resume()
        await asyncio.sleep(0.25)  # the back-off
        after = await limiter.take("hung", POLICY)
        # The take that timed out was sent, and ran when the master woke: its token is
        # spent. An outage can cost tokens, never grant extra ones.
        assert (after.degraded, after.remaining) == (False, 7)
        assert await limiter.ping(0.5)
    finally:
        await limiter.close()
