"""InProcessTokenBucket: same semantics as the Redis bucket, bounded memory."""

from __future__ import annotations

import asyncio

import pytest

from pollybot_leads.ratelimit.base import BucketPolicy, Decision
from pollybot_leads.ratelimit.memory import InProcessTokenBucket, degraded_decision

FROZEN = 0.001


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def test_exactly_capacity_allowed_under_concurrency() -> None:
    limiter = InProcessTokenBucket()
    policy = BucketPolicy(capacity=20, refill_per_second=FROZEN)

    decisions = await asyncio.gather(*(limiter.take("burst", policy) for _ in range(200)))

    assert sum(d.allowed for d in decisions) == 20
    assert sum(not d.allowed for d in decisions) == 180
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(20))


async def test_refill_in_real_time() -> None:
    limiter = InProcessTokenBucket()
    policy = BucketPolicy(capacity=2, refill_per_second=20.0)
    assert (await limiter.take("refill", policy)).allowed
    assert (await limiter.take("refill", policy)).allowed
    assert not (await limiter.take("refill", policy)).allowed
    await asyncio.sleep(0.1)
    assert (await limiter.take("refill", policy)).allowed


def test_header_values_and_refill() -> None:
    clock = FakeClock()
    limiter = InProcessTokenBucket(clock=clock)
    policy = BucketPolicy(capacity=3, refill_per_second=0.5)  # one token per 2 s

    got = [limiter.take_nowait("h", policy) for _ in range(4)]
    assert got == [
        Decision(allowed=True, limit=3, remaining=2, reset_seconds=2, retry_after=0),
        Decision(allowed=True, limit=3, remaining=1, reset_seconds=4, retry_after=0),
        Decision(allowed=True, limit=3, remaining=0, reset_seconds=6, retry_after=0),
        Decision(allowed=False, limit=3, remaining=0, reset_seconds=6, retry_after=2),
    ]

    clock.advance(1.5)  # 0.75 token
    assert limiter.take_nowait("h", policy) == Decision(
        allowed=False, limit=3, remaining=0, reset_seconds=5, retry_after=1
    )
    clock.advance(0.5)  # 1 token
    assert limiter.take_nowait("h", policy) == Decision(
        allowed=True, limit=3, remaining=0, reset_seconds=6, retry_after=0
    )
    clock.advance(60)  # full again, never more than capacity
    assert limiter.take_nowait("h", policy).remaining == 2


def test_retry_after_is_at_least_one_second() -> None:
    clock = FakeClock()
    limiter = InProcessTokenBucket(clock=clock)
    policy = BucketPolicy(capacity=1, refill_per_second=1000.0)
    assert limiter.take_nowait("fast", policy).allowed
    refused = limiter.take_nowait("fast", policy)
    assert (refused.allowed, refused.retry_after, refused.reset_seconds) == (False, 1, 1)


def test_buckets_and_policies_are_independent() -> None:
    limiter = InProcessTokenBucket(clock=FakeClock())
    small, large = BucketPolicy(3, FROZEN), BucketPolicy(10, FROZEN)
    assert sum(limiter.take_nowait("a", small).allowed for _ in range(12)) == 3
    assert sum(limiter.take_nowait("b", large).allowed for _ in range(12)) == 10
    assert limiter.take_nowait("c", small).remaining == 2
    # Lowering a key's capacity clamps what it holds.
    assert limiter.take_nowait("d", large).remaining == 9
    assert limiter.take_nowait("d", small).remaining == 2


def test_full_buckets_are_evicted() -> None:
    clock = FakeClock()
    limiter = InProcessTokenBucket(clock=clock, sweep_interval_seconds=60.0)
    policy = BucketPolicy(capacity=5, refill_per_second=1.0)  # full again 1 s after a take
    for i in range(1000):
        limiter.take_nowait(f"ip:{i}", policy)
    assert len(limiter) == 1000

    clock.advance(1.0)  # every bucket is full again: dropping them loses nothing
    limiter.take_nowait("ip:0", policy)  # incremental eviction: drops the oldest full ones
    assert len(limiter) < 1000
    before = len(limiter)
    assert limiter.sweep() == before - 1  # all but the one just used
    assert len(limiter) == 1

    # A bucket that is not yet full is kept, with its state.
    for _ in range(4):
        limiter.take_nowait("busy", policy)
    clock.advance(0.5)  # 1.5 tokens: not full
    limiter.sweep()
    assert limiter.take_nowait("busy", policy).remaining == 0  # forgotten, it would say 4


def test_periodic_sweep_runs_on_take() -> None:
    clock = FakeClock()
    limiter = InProcessTokenBucket(clock=clock, sweep_interval_seconds=10.0)
    policy = BucketPolicy(capacity=2, refill_per_second=1.0)
    for i in range(100):
        limiter.take_nowait(f"k{i}", policy)
    limiter.take_nowait("k0", policy)  # k0 is now the most recently used, not full
    clock.advance(1.5)  # all but k0 are full again; the sweep is not due yet
    assert len(limiter) == 100
    clock.advance(10.0)
    limiter.take_nowait("other", policy)
    assert len(limiter) == 1


def test_memory_is_capped() -> None:
    clock = FakeClock()
    limiter = InProcessTokenBucket(clock=clock, max_buckets=50)
    policy = BucketPolicy(capacity=5, refill_per_second=FROZEN)  # never full again
    for i in range(500):
        limiter.take_nowait(f"k{i}", policy)
        clock.advance(0.01)
    assert len(limiter) == 50
    # The least recently used went first; the most recent keep their state.
    assert limiter.take_nowait("k499", policy).remaining == 3
    assert limiter.take_nowait("k0", policy).remaining == 4  # forgotten: starts full


async def test_close_forgets_everything() -> None:
    limiter = InProcessTokenBucket()
    await limiter.take("x", BucketPolicy(2, FROZEN))
    await limiter.close()
    assert len(limiter) == 0


def test_invalid_policy_is_a_value_error() -> None:
    limiter = InProcessTokenBucket()
    with pytest.raises(ValueError):
        limiter.take_nowait("bad", BucketPolicy(capacity=0, refill_per_second=1.0))
    with pytest.raises(ValueError):
        limiter.take_nowait("bad", BucketPolicy(capacity=1, refill_per_second=-1.0))


def test_degraded_decision_describes_a_full_bucket_after_one_take() -> None:
    assert degraded_decision(BucketPolicy(100, 10.0)) == Decision(
        allowed=True, limit=100, remaining=99, reset_seconds=1, retry_after=0, degraded=True
    )
    assert degraded_decision(BucketPolicy(20, 0.2)).reset_seconds == 5
