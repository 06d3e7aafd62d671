"""A token bucket per API key, taken once the key is found and before its chatbot is
checked; headers on every response."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from ..errors import RateLimited, ServiceUnavailable
from ..ratelimit.base import BucketPolicy, RateLimiter, RateLimiterUnavailable
from .context import API_KEY, RESPONSE_HEADERS
from .steps import Step

# Takes more tokens for a request that costs more than one (a batch: one per item).
Charge = Callable[[int], Awaitable[None]]
CHARGE: web.RequestKey[Charge] = web.RequestKey("ratelimit_charge")
OWN_POLICIES_KEPT = 1024


async def charge(request: web.Request, tokens: int) -> None:
    """Take ``tokens`` more from the request's bucket (nothing when rate limiting is off);
    RateLimited, with nothing else spent, when the bucket does not hold them."""
    more = request.get(CHARGE)
    if more is not None and tokens > 0:
        await more(tokens)


def ratelimit_step(limiter_key: web.AppKey[RateLimiter], default_policy: BucketPolicy) -> Step:
    """Takes the request's key's token (none found: nothing to take) and leaves CHARGE for
    a handler that needs more."""
    # One policy per distinct pair of a key's own limits, built once (a few pairs in all).
    own_policies: dict[tuple[int | None, float | None], BucketPolicy] = {}

    def own_policy(limits: tuple[int | None, float | None]) -> BucketPolicy:
        if len(own_policies) >= OWN_POLICIES_KEPT:
            own_policies.clear()
        capacity, refill = limits
        policy = own_policies[limits] = BucketPolicy(
            capacity=capacity or default_policy.capacity,
            refill_per_second=refill or default_policy.refill_per_second,
        )
        return policy

    async def limit(request: web.Request) -> None:
        key = request.get(API_KEY)
        if key is None:
            return
        policy = default_policy
        if key.rate_limit_capacity or key.rate_limit_refill:  # the key's own limits
            limits = (key.rate_limit_capacity, key.rate_limit_refill)
            policy = own_policies.get(limits) or own_policy(limits)

        async def take(cost: int) -> None:
            try:
                decision = await request.app[limiter_key].take("key:" + key.id, policy, cost)
            except RateLimiterUnavailable as exc:
                retry_after = getattr(exc, "retry_after", 1)
                raise ServiceUnavailable(
                    "Rate limiting is unavailable; retry shortly",
                    headers={"Retry-After": str(max(1, retry_after))},
                ) from None
            if not decision.degraded:
                request[RESPONSE_HEADERS].update(
                    {
                        "X-RateLimit-Limit": str(decision.limit),
                        "X-RateLimit-Remaining": str(decision.remaining),
                        "X-RateLimit-Reset": str(decision.reset_seconds),
                    }
                )
            if not decision.allowed:
                message = "Rate limit exceeded; retry after the time in Retry-After"
                if cost >= policy.capacity:
                    message = "This request needs more tokens than the key's bucket holds"
                raise RateLimited(message, headers={"Retry-After": str(decision.retry_after)})

        await take(1)
        request[CHARGE] = take

    return limit
