"""The rate limiter's interface: one token bucket per key, behind one protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class BucketPolicy:
    """A bucket holds at most ``capacity`` tokens and regains ``refill_per_second``."""

    capacity: int
    refill_per_second: float


@dataclass(frozen=True)
class Decision:
    """The outcome of taking one token, with everything the response headers need."""

    allowed: bool
    limit: int  # X-RateLimit-Limit: the bucket's capacity
    remaining: int  # X-RateLimit-Remaining: whole tokens left after this request
    reset_seconds: int  # X-RateLimit-Reset: whole seconds until the bucket is full again
    retry_after: int  # Retry-After on a refusal: whole seconds until one token, >= 1; else 0
    degraded: bool = False  # True when the store could not be asked and the policy allowed


class RateLimiterUnavailable(Exception):
    """The backing store cannot be reached and the failure policy is ``deny``."""


class RateLimiter(Protocol):
    async def take(self, bucket: str, policy: BucketPolicy, cost: int = 1) -> Decision:
        """Take ``cost`` tokens from ``bucket`` (created full on first use), all or none.

        A negative ``cost`` gives tokens back, never past the capacity: what a caller
        returns that took a token before it knew whether it had to.
        """
        ...

    async def ping(self, timeout: float) -> bool:
        """True when the backing store answers within ``timeout`` seconds (readiness)."""
        ...

    async def close(self) -> None: ...
