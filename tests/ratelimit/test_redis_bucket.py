"""RedisTokenBucket against real, private redis-servers (see conftest.py).

Tests of limiting (``make_bucket``) run four times: over TCP, TLS, a unix socket and on a
3-master Redis Cluster. Tests of Redis trouble stop and pause a TCP server of their own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from pollybot_leads.ratelimit.base import BucketPolicy, Decision, RateLimiterUnavailable
from pollybot_leads.ratelimit.memory import InProcessTokenBucket
from pollybot_leads.ratelimit.redis_bucket import (
    KEY_PREFIX,
    RedisRateLimiterUnavailable,
    RedisTokenBucket,
)
from pollybot_leads.ratelimit.resp import RespClient
from pollybot_leads.ratelimit.resp_cluster import ClusterClient, client_from_url
from pollybot_leads.ratelimit.resp_protocol import INCOMPLETE, RespParser
from pollybot_leads.settings import Settings, SettingsError
from tests.ratelimit.conftest import Target
from tests.redis_server import RedisServer

FROZEN = 0.001  # tokens per second: refill negligible during a test
LOGGER_NAME = "tests.ratelimit.redis"

MakeBucket = Callable[..., RedisTokenBucket]


class CallSpy:
    """Counts the commands a client sends (each is one round trip).

    Spied on where every command goes out, packed (so the wire bytes are what is
    recorded): the RespClient's ``send_packed``, or each cluster node's.
    """

    def __init__(self, client: RespClient | ClusterClient) -> None:
        self.commands: list[str] = []
        nodes = list(client.nodes.values()) if isinstance(client, ClusterClient) else [client]
        assert nodes, "spy on a cluster client after its first command"
        for node in nodes:
            self._spy(node)

    def _spy(self, node: RespClient) -> None:
        send_packed = node.send_packed

        def spy_send(data: bytes) -> Any:
            parser = RespParser()
            parser.feed(data)
            args = parser.gets()
            assert parser.gets() is INCOMPLETE  # exactly one command
            self.commands.append(b" ".join(args[:2]).decode().upper())
            return send_packed(data)

        node.send_packed = spy_send  # type: ignore[method-assign]

    def __len__(self) -> int:
        return len(self.commands)


async def timed(coro: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = await coro
    return result, time.perf_counter() - start


async def timed_raises(coro: Any, exc_type: type[BaseException]) -> tuple[Any, float]:
    start = time.perf_counter()
    with pytest.raises(exc_type) as info:
        await coro
    return info.value, time.perf_counter() - start


# --- limiting ---------------------------------------------------------------------------


async def test_exactly_capacity_allowed_under_concurrency(make_bucket: MakeBucket) -> None:
    limiter = make_bucket()
    policy = BucketPolicy(capacity=20, refill_per_second=FROZEN)

    decisions = await asyncio.gather(*(limiter.take("burst", policy) for _ in range(200)))

    allowed = [d for d in decisions if d.allowed]
    assert len(allowed) == 20
    assert sum(not d.allowed for d in decisions) == 180
    assert not any(d.degraded for d in decisions)
    assert sorted(d.remaining for d in allowed) == list(range(20))
    assert all(d.retry_after >= 1 and d.remaining == 0 for d in decisions if not d.allowed)


async def test_two_instances_with_separate_pools_share_one_bucket(
    make_bucket: MakeBucket,
) -> None:
    first, second = make_bucket(), make_bucket()
    assert first.client is not second.client
    policy = BucketPolicy(capacity=30, refill_per_second=FROZEN)

    decisions = await asyncio.gather(
        *(limiter.take("shared", policy) for _ in range(50) for limiter in (first, second))
    )

    assert sum(d.allowed for d in decisions) == 30
    after_first = await first.take("shared", policy)
    after_second = await second.take("shared", policy)
    assert not after_first.allowed and not after_second.allowed


async def test_refill_gives_tokens_back(make_bucket: MakeBucket) -> None:
    limiter = make_bucket()
    policy = BucketPolicy(capacity=2, refill_per_second=20.0)

    assert (await limiter.take("refill", policy)).allowed
    assert (await limiter.take("refill", policy)).allowed
    refused = await limiter.take("refill", policy)
    assert not refused.allowed
    assert refused.retry_after == 1  # 50 ms until one token, rounded up to a whole second

    await asyncio.sleep(0.1)  # 2 tokens' worth
    assert (await limiter.take("refill", policy)).allowed


async def test_a_negative_cost_gives_tokens_back_up_to_the_capacity(
    make_bucket: MakeBucket,
) -> None:
    limiter, local = make_bucket(), InProcessTokenBucket()
    policy = BucketPolicy(capacity=3, refill_per_second=FROZEN)
    for bucket in (limiter, local):
        assert [(await bucket.take("back", policy)).remaining for _ in range(3)] == [2, 1, 0]
        assert not (await bucket.take("back", policy)).allowed
        given = await bucket.take("back", policy, -1)
        assert given.allowed and given.remaining == 1
        assert (await bucket.take("back", policy)).remaining == 0
        assert (await bucket.take("back", policy, -5)).remaining == 3  # never past capacity
        assert [(await bucket.take("back", policy)).allowed for _ in range(4)] == [
            True,
            True,
            True,
            False,
        ]


async def test_header_values(make_bucket: MakeBucket) -> None:
    limiter = make_bucket()
    policy = BucketPolicy(capacity=3, refill_per_second=0.5)  # one token per 2 s

    got = [await limiter.take("headers", policy) for _ in range(4)]

    assert got == [
        Decision(allowed=True, limit=3, remaining=2, reset_seconds=2, retry_after=0),
        Decision(allowed=True, limit=3, remaining=1, reset_seconds=4, retry_after=0),
        Decision(allowed=True, limit=3, remaining=0, reset_seconds=6, retry_after=0),
        Decision(allowed=False, limit=3, remaining=0, reset_seconds=6, retry_after=2),
    ]


async def test_same_arithmetic_as_the_in_process_bucket(make_bucket: MakeBucket) -> None:
    limiter, local = make_bucket(), InProcessTokenBucket()
    for policy in (
        BucketPolicy(capacity=5, refill_per_second=0.3),
        BucketPolicy(capacity=1, refill_per_second=0.001),
        BucketPolicy(capacity=30, refill_per_second=1.0),
        BucketPolicy(capacity=7, refill_per_second=2.5),
    ):
        name = f"same-{policy.capacity}"
        for _ in range(policy.capacity + 2):
            assert await limiter.take(name, policy) == await local.take(name, policy)


async def test_buckets_are_isolated(make_bucket: MakeBucket) -> None:
    limiter = make_bucket()
    policy = BucketPolicy(capacity=3, refill_per_second=FROZEN)
    for _ in range(3):
        assert (await limiter.take("key:a", policy)).allowed
    assert not (await limiter.take("key:a", policy)).allowed

    other = await limiter.take("key:b", policy)
    assert other.allowed and other.remaining == 2
    assert not (await limiter.take("key:a", policy)).allowed


async def test_each_policy_has_its_own_capacity(make_bucket: MakeBucket) -> None:
    limiter = make_bucket()
    small = BucketPolicy(capacity=3, refill_per_second=FROZEN)
    large = BucketPolicy(capacity=10, refill_per_second=FROZEN)

    small_run = [await limiter.take("key:small", small) for _ in range(12)]
    large_run = [await limiter.take("key:large", large) for _ in range(12)]

    assert sum(d.allowed for d in small_run) == 3
    assert sum(d.allowed for d in large_run) == 10
    assert {d.limit for d in small_run} == {3} and {d.limit for d in large_run} == {10}


async def test_lowering_a_keys_capacity_clamps_its_tokens(make_bucket: MakeBucket) -> None:
    limiter = make_bucket()
    first = await limiter.take("override", BucketPolicy(10, FROZEN))
    assert first.remaining == 9
    lowered = await limiter.take("override", BucketPolicy(3, FROZEN))
    assert (lowered.allowed, lowered.limit, lowered.remaining) == (True, 3, 2)


async def test_one_round_trip_per_take(make_bucket: MakeBucket) -> None:
    limiter = make_bucket()
    policy = BucketPolicy(capacity=50, refill_per_second=FROZEN)
    await limiter.take("trips", policy)  # the script is loaded now
    spy = CallSpy(limiter.client)

    for _ in range(10):
        await limiter.take("trips", policy)

    assert spy.commands == ["EVALSHA " + limiter._sha.upper()] * 10


async def test_script_flush_is_survived(
    make_bucket: MakeBucket, target_client: Redis | RedisCluster
) -> None:
    limiter = make_bucket()
    policy = BucketPolicy(capacity=5, refill_per_second=FROZEN)
    assert (await limiter.take("flush", policy)).remaining == 4

    await target_client.script_flush()
    spy = CallSpy(limiter.client)
    after = await limiter.take("flush", policy)

    assert (after.allowed, after.remaining, after.degraded) == (True, 3, False)
    sent = [c.split()[0] for c in spy.commands]
    masters = 3 if isinstance(limiter.client, ClusterClient) else 1  # loaded on each
    assert sent == ["EVALSHA"] + ["SCRIPT"] * masters + ["EVALSHA"]
    assert (await limiter.take("flush", policy)).remaining == 2
    assert len(spy) == len(sent) + 1


async def test_bucket_is_one_hash_key_that_expires_when_full(
    make_bucket: MakeBucket, target_client: Redis | RedisCluster
) -> None:
    limiter = make_bucket()
    policy = BucketPolicy(capacity=2, refill_per_second=20.0)  # full again after 50 ms

    await limiter.take("idle", policy)

    key = KEY_PREFIX + "idle"
    assert await target_client.keys("*") == [key.encode()]
    assert await target_client.type(key) == b"hash"
    assert set(await target_client.hkeys(key)) == {b"t", b"u"}
    assert 0 < await target_client.pttl(key) <= 50
    await asyncio.sleep(0.15)
    assert await target_client.exists(key) == 0
    again = await limiter.take("idle", policy)
    assert (again.allowed, again.remaining) == (True, 1)  # a vanished bucket is a full one


async def test_refused_take_keeps_a_ttl(
    make_bucket: MakeBucket, target_client: Redis | RedisCluster
) -> None:
    limiter = make_bucket()
    policy = BucketPolicy(capacity=1, refill_per_second=0.5)
    await limiter.take("ttl", policy)
    refused = await limiter.take("ttl", policy)
    assert not refused.allowed
    assert 1000 < await target_client.pttl(KEY_PREFIX + "ttl") <= 2000


async def test_invalid_policy_is_a_value_error(make_bucket: MakeBucket) -> None:
    limiter = make_bucket()
    with pytest.raises(ValueError):
        await limiter.take("bad", BucketPolicy(capacity=0, refill_per_second=1.0))
    with pytest.raises(ValueError):
        await limiter.take("bad", BucketPolicy(capacity=1, refill_per_second=0.0))


# --- construction and closing ------------------------------------------------------------


async def test_from_settings(redis_server: RedisServer) -> None:
    settings = Settings(
        redis_url=redis_server.url,
        redis_timeout_ms=250,
        ratelimit_failure_policy="deny",
        ratelimit_failure_backoff_seconds=1.5,
        ratelimit_failure_log_interval_seconds=7.0,
    )
    limiter = RedisTokenBucket.from_settings(settings)
    try:
        assert limiter.failure_policy == "deny"
        assert limiter._timeout == 0.25 and limiter._backoff == 1.5
        assert limiter._log_interval == 7.0
        assert isinstance(limiter.client, RespClient)
        assert limiter.client.connect_timeout == 0.25
        assert not limiter.client.connected  # lazily: nothing before the first take
        assert (await limiter.take("settings", BucketPolicy(2, FROZEN))).remaining == 1
        assert limiter.client.connected
    finally:
        await limiter.close()
    assert limiter.client.closed

    with pytest.raises(ValueError):
        RedisTokenBucket.from_settings(Settings())


@pytest.mark.parametrize(
    ("url", "kind", "shown"),
    [
        ("rediss://cache.example:6380/0", RespClient, "rediss://cache.example:6380/0"),
        ("unix:///run/redis.sock?db=2", RespClient, "unix:///run/redis.sock?db=2"),
        ("redis+cluster://:pw@10.0.0.1:7000?addr=10.0.0.2:7001", ClusterClient, "10.0.0.2:7001"),
    ],
)
async def test_every_url_gets_the_one_client(url: str, kind: type, shown: str) -> None:
    settings = Settings(redis_url=url, redis_timeout_ms=250)
    limiter = RedisTokenBucket.from_settings(settings)
    try:
        assert isinstance(limiter.client, kind)
        assert shown in repr(limiter.client) and "pw" not in repr(limiter.client)
    finally:
        await limiter.close()


@pytest.mark.parametrize(
    "url",
    [
        "redis://host:notaport/0",
        "redis://host:6379/zero",
        "redis://host/0?db=x",
        "redis://host/0?socket_keepalive=true",
        "http://user:secret@host/0",
        "unix://",
        "rediss://host/0?ssl_cert_reqs=maybe",
        "redis+cluster://host:7000/3",
        "redis+cluster://host:7000?addr=nohost",
    ],
)
def test_a_malformed_redis_url_is_refused_at_start(url: str) -> None:
    with pytest.raises(ValueError):
        RedisTokenBucket(url)
    with pytest.raises(SettingsError) as info:
        Settings(redis_url=url)
    assert "secret" not in str(info.value)


async def test_close_closes_only_a_client_it_created(
    make_bucket: MakeBucket, redis_target: Target
) -> None:
    client = client_from_url(redis_target.url)
    borrowed = make_bucket(client)
    try:
        assert not (await borrowed.take("close", BucketPolicy(2, FROZEN))).degraded
        await borrowed.close()
        assert await client.ping()  # still usable: not ours to close
    finally:
        await client.aclose()

    owned = make_bucket()
    await owned.take("close", BucketPolicy(2, FROZEN))
    await owned.close()
    await owned.close()  # idempotent


# --- Redis unavailable ----------------------------------------------------------------------


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    return caplog


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER_NAME and r.levelno == level]


def failing_bucket(server: RedisServer, **kwargs: Any) -> RedisTokenBucket:
    kwargs.setdefault("timeout_ms", 100)
    kwargs.setdefault("backoff_seconds", 0.3)
    kwargs.setdefault("log_interval_seconds", 60.0)
    return RedisTokenBucket(server.url, logger=logging.getLogger(LOGGER_NAME), **kwargs)


async def test_stopped_redis_policy_allow_degrades_then_recovers(
    own_redis_server: RedisServer,
    log: pytest.LogCaptureFixture,
) -> None:
    limiter = failing_bucket(own_redis_server, failure_policy="allow")
    policy = BucketPolicy(capacity=3, refill_per_second=FROZEN)
    try:
        assert not (await limiter.take("down", policy)).degraded
        own_redis_server.stop()

        decision, elapsed = await timed(limiter.take("down", policy))
        assert elapsed < 0.5
        assert decision == Decision(
            allowed=True, limit=3, remaining=2, reset_seconds=1000, retry_after=0, degraded=True
        )
        assert not limiter.available
        assert len(records(log, logging.WARNING)) == 1

        # Back-off: the policy applies at once, Redis is not called.
        spy = CallSpy(limiter.client)
        for _ in range(20):
            decision, elapsed = await timed(limiter.take("down", policy))
            assert decision.degraded and decision.allowed
            assert elapsed < 0.01
        assert len(spy) == 0

        own_redis_server.start()  # same port, empty: the script must be loaded again
        assert (await limiter.take("down", policy)).degraded  # still backing off
        await asyncio.sleep(0.35)

        resumed = [await limiter.take("down", policy) for _ in range(4)]
        assert not any(d.degraded for d in resumed)
        assert [d.allowed for d in resumed] == [True, True, True, False]
        assert limiter.available
        recovered = records(log, logging.INFO)
        assert len(recovered) == 1 and "reachable again" in recovered[0].getMessage()
        assert len(records(log, logging.WARNING)) == 1
    finally:
        await limiter.close()


async def test_stopped_redis_policy_deny_raises(
    own_redis_server: RedisServer,
    log: pytest.LogCaptureFixture,
) -> None:
    limiter = failing_bucket(own_redis_server, failure_policy="deny")
    policy = BucketPolicy(capacity=3, refill_per_second=FROZEN)
    try:
        assert (await limiter.take("deny", policy)).allowed
        own_redis_server.stop()

        error, elapsed = await timed_raises(limiter.take("deny", policy), RateLimiterUnavailable)
        assert elapsed < 0.5
        assert isinstance(error, RedisRateLimiterUnavailable) and error.retry_after == 1
        assert error.__cause__ is not None

        spy = CallSpy(limiter.client)
        for _ in range(10):
            _, elapsed = await timed_raises(limiter.take("deny", policy), RateLimiterUnavailable)
            assert elapsed < 0.01
        assert len(spy) == 0
        assert len(records(log, logging.WARNING)) == 1

        own_redis_server.start()
        await asyncio.sleep(0.35)
        decision = await limiter.take("deny", policy)
        assert decision.allowed and not decision.degraded
    finally:
        await limiter.close()


@pytest.mark.parametrize("kind", ["from-url", "client-without-timeouts"])
async def test_hung_redis_times_out(
    own_redis_server: RedisServer, log: pytest.LogCaptureFixture, kind: str
) -> None:
    # A client built without connect and stall timeouts is still cut off by the bucket's
    # hard asyncio timeout.
    own_client = kind == "client-without-timeouts"
    client = RespClient.from_url(own_redis_server.url) if own_client else None
    if client is None:
        limiter = failing_bucket(own_redis_server)
    else:
        limiter = RedisTokenBucket(
            client, timeout_ms=100, backoff_seconds=0.3, logger=logging.getLogger(LOGGER_NAME)
        )
    policy = BucketPolicy(capacity=3, refill_per_second=FROZEN)
    try:
        assert not (await limiter.take("hung", policy)).degraded
        own_redis_server.pause()

        decision, elapsed = await timed(limiter.take("hung", policy))
        assert decision.degraded and decision.allowed
        assert 0.09 < elapsed < 0.5
        [warning] = records(log, logging.WARNING)
        assert "no answer within 100 ms" in warning.getMessage()

        own_redis_server.resume()
        await asyncio.sleep(0.35)
        decision = await limiter.take("hung", policy)
        assert not decision.degraded
    finally:
        own_redis_server.resume()
        await limiter.close()
        if client is not None:
            await client.aclose()


async def test_hung_redis_policy_deny_raises_within_timeout(
    own_redis_server: RedisServer,
) -> None:
    limiter = failing_bucket(own_redis_server, failure_policy="deny")
    policy = BucketPolicy(capacity=3, refill_per_second=FROZEN)
    try:
        await limiter.take("hung-deny", policy)
        own_redis_server.pause()
        _, elapsed = await timed_raises(limiter.take("hung-deny", policy), RateLimiterUnavailable)
        assert elapsed < 0.5
    finally:
        own_redis_server.resume()
        await limiter.close()


async def test_after_back_off_a_single_request_probes(
    own_redis_server: RedisServer,
) -> None:
    limiter = failing_bucket(own_redis_server, failure_policy="allow", backoff_seconds=0.1)
    policy = BucketPolicy(capacity=3, refill_per_second=FROZEN)
    try:
        await limiter.take("probe", policy)
        own_redis_server.pause()
        assert (await limiter.take("probe", policy)).degraded
        await asyncio.sleep(0.15)

        spy = CallSpy(limiter.client)
        start = time.perf_counter()
        decisions = await asyncio.gather(*(limiter.take("probe", policy) for _ in range(50)))
        assert time.perf_counter() - start < 0.5
        assert all(d.degraded for d in decisions)
        assert len(spy) == 1  # one probe; the other 49 did not wait for Redis
    finally:
        own_redis_server.resume()
        await limiter.close()


async def test_failures_are_logged_once_per_interval(
    own_redis_server: RedisServer,
    log: pytest.LogCaptureFixture,
) -> None:
    # No back-off: every take tries Redis and fails; the log stays quiet in between.
    limiter = failing_bucket(own_redis_server, backoff_seconds=0.0, log_interval_seconds=0.3)
    policy = BucketPolicy(capacity=3, refill_per_second=FROZEN)
    try:
        own_redis_server.stop()
        for _ in range(10):
            assert (await limiter.take("log", policy)).degraded
        warnings = records(log, logging.WARNING)
        assert len(warnings) == 1
        assert "0 more failures" in warnings[0].getMessage()

        await asyncio.sleep(0.35)
        for _ in range(5):
            await limiter.take("log", policy)
        warnings = records(log, logging.WARNING)
        assert len(warnings) == 2
        assert "9 more failures" in warnings[1].getMessage()
        assert records(log, logging.INFO) == []
        assert all(own_redis_server.url not in r.getMessage() for r in warnings)
    finally:
        await limiter.close()


async def test_back_off_requests_are_counted_in_the_next_warning(
    own_redis_server: RedisServer,
    log: pytest.LogCaptureFixture,
) -> None:
    limiter = failing_bucket(own_redis_server, backoff_seconds=0.1, log_interval_seconds=0.2)
    policy = BucketPolicy(capacity=3, refill_per_second=FROZEN)
    try:
        own_redis_server.stop()
        await limiter.take("count", policy)  # failure: warning 1
        for _ in range(7):
            await limiter.take("count", policy)  # backing off: decided without Redis
        await asyncio.sleep(0.25)
        await limiter.take("count", policy)  # probe fails: warning 2
        warnings = records(log, logging.WARNING)
        assert len(warnings) == 2
        assert "7 requests decided without Redis" in warnings[1].getMessage()
    finally:
        await limiter.close()
