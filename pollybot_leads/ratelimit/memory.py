"""A token bucket per key kept in this process: no sharing, no network, no failure mode.

It follows the Redis bucket's semantics and header arithmetic exactly (both work out the
time until full and until one token in whole milliseconds, then go through
:func:`make_decision`), so the two can be swapped without changing any response header.

Memory stays bounded: a bucket that has refilled completely is indistinguishable from one
that does not exist, so such buckets are dropped (a little on every take, and all of them on
a periodic sweep); past ``max_buckets`` the least recently used buckets are dropped too,
which only ever errs on the lenient side (a forgotten bucket starts full again).

``take`` never awaits, so it is atomic under asyncio; the class is not thread-safe.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from pollybot_leads.ratelimit.base import BucketPolicy, Decision

__all__ = ["InProcessTokenBucket", "check_policy", "degraded_decision", "make_decision"]


def check_policy(policy: BucketPolicy) -> None:
    """Reject a policy no bucket can honour (a programming or configuration error)."""
    if policy.capacity < 1:
        raise ValueError(f"bucket capacity must be at least 1, not {policy.capacity!r}")
    if not policy.refill_per_second > 0 or math.isinf(policy.refill_per_second):
        raise ValueError(
            f"bucket refill rate must be positive and finite, not {policy.refill_per_second!r}"
        )


def ms_until(tokens_short: float, refill_per_second: float) -> int:
    """Whole milliseconds (rounded up) to regain ``tokens_short`` tokens; 0 if none short.

    Float noise below 1e-6 ms is ignored, so that 3 tokens at 0.3/s are 10000 ms, not 10001.
    The Redis script computes exactly the same.
    """
    if tokens_short <= 0:
        return 0
    return max(0, math.ceil(tokens_short * 1000.0 / refill_per_second - 1e-6))


def make_decision(
    *, allowed: bool, capacity: int, remaining: int, ms_to_full: int, ms_to_one: int
) -> Decision:
    """The header arithmetic shared by every bucket implementation.

    ``remaining`` is already whole tokens (floored); ``ms_to_full`` and ``ms_to_one`` are
    whole milliseconds, rounded up, until the bucket is full and until it holds one token.
    """
    return Decision(
        allowed=allowed,
        limit=capacity,
        remaining=max(0, remaining),
        reset_seconds=max(0, math.ceil(ms_to_full / 1000)),
        retry_after=0 if allowed else max(1, math.ceil(ms_to_one / 1000)),
    )


def degraded_decision(policy: BucketPolicy) -> Decision:
    """What a limiter that cannot consult its store answers under the ``allow`` policy.

    The numbers describe a bucket that was full and has just given one token: the store
    cannot be asked, and this is the only state that never refuses a client wrongly.
    """
    return Decision(
        allowed=True,
        limit=policy.capacity,
        remaining=policy.capacity - 1,
        reset_seconds=math.ceil(ms_until(1, policy.refill_per_second) / 1000),
        retry_after=0,
        degraded=True,
    )


class _Bucket:
    __slots__ = ("full_at", "stamp", "tokens")

    def __init__(self, tokens: float, stamp: float, full_at: float) -> None:
        self.tokens = tokens
        self.stamp = stamp
        self.full_at = full_at


class InProcessTokenBucket:
    """:class:`~pollybot_leads.ratelimit.base.RateLimiter` kept in this process's memory."""

    def __init__(
        self,
        *,
        max_buckets: int = 100_000,
        sweep_interval_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_buckets < 1:
            raise ValueError("max_buckets must be at least 1")
        self._max_buckets = max_buckets
        self._sweep_interval = sweep_interval_seconds
        self._clock = clock
        # Least recently used first.
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._last_sweep = clock()
        self._next_sweep = self._last_sweep + sweep_interval_seconds

    @classmethod
    def from_settings(cls, settings: Any) -> InProcessTokenBucket:
        """Nothing in the settings applies; capacities come with each ``take``."""
        return cls()

    def __len__(self) -> int:
        """How many buckets are held (full buckets may linger until the next eviction)."""
        return len(self._buckets)

    async def take(self, bucket: str, policy: BucketPolicy, cost: int = 1) -> Decision:
        return self.take_nowait(bucket, policy, cost)

    def take_nowait(self, bucket: str, policy: BucketPolicy, cost: int = 1) -> Decision:
        """:meth:`take` without the coroutine: the whole operation is synchronous."""
        check_policy(policy)
        now = self._clock()
        capacity = policy.capacity
        rate = policy.refill_per_second

        state = self._buckets.get(bucket)
        if state is None:
            tokens = float(capacity)
        else:
            elapsed = max(0.0, now - state.stamp)
            tokens = min(float(capacity), state.tokens + elapsed * rate)

        allowed = tokens >= cost
        if allowed:
            tokens = min(float(capacity), tokens - cost)  # a negative cost gives back

        ms_to_full = ms_until(capacity - tokens, rate)
        ms_to_one = ms_until(cost - tokens, rate)
        full_at = now + ms_to_full / 1000.0
        if state is None:
            self._buckets[bucket] = _Bucket(tokens, now, full_at)
        else:
            state.tokens, state.stamp, state.full_at = tokens, now, full_at
            self._buckets.move_to_end(bucket)
        self._evict(now)

        return make_decision(
            allowed=allowed,
            capacity=capacity,
            remaining=math.floor(tokens),
            ms_to_full=ms_to_full,
            ms_to_one=ms_to_one,
        )

    def _evict(self, now: float) -> None:
        buckets = self._buckets
        # Incremental: the least recently used bucket is the likeliest to be full again.
        for _ in range(2):
            if not buckets:
                break
            oldest_key = next(iter(buckets))
            if buckets[oldest_key].full_at > now:
                break
            del buckets[oldest_key]
        over = len(buckets) > self._max_buckets
        # A full sweep is O(n): when due, or when over the cap but at most once a second.
        if now >= self._next_sweep or (over and now - self._last_sweep >= 1.0):
            self.sweep(now)
        while len(buckets) > self._max_buckets:
            buckets.popitem(last=False)  # lenient: a forgotten bucket starts full

    def sweep(self, now: float | None = None) -> int:
        """Drop every bucket that is full again; return how many were dropped."""
        now = self._clock() if now is None else now
        full = [key for key, state in self._buckets.items() if state.full_at <= now]
        for key in full:
            del self._buckets[key]
        self._last_sweep = now
        self._next_sweep = now + self._sweep_interval
        return len(full)

    async def ping(self, timeout: float) -> bool:
        """Always ready: the buckets are in this process."""
        return True

    async def close(self) -> None:
        self._buckets.clear()
