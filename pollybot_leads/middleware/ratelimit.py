"""A token bucket per API key, taken after authentication; headers on every response."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ..errors import RateLimited, ServiceUnavailable
from ..ratelimit.base import BucketPolicy, RateLimiter, RateLimiterUnavailable
from .context import AUTH, RESPONSE_HEADERS

# Takes more tokens for a request that costs more than one (a batch: one per item).
Charge = Callable[[int], Awaitable[None]]
CHARGE: web.RequestKey[Charge] = web.RequestKey("ratelimit_charge")


async def charge(request: web.Request, tokens: int) -> None:
    """Take ``tokens`` more from the request's bucket (nothing when rate limiting is off);
    RateLimited, with nothing else spent, when the bucket does not hold them."""
    more = request.get(CHARGE)
    if more is not None and tokens > 0:
        await more(tokens)


def ratelimit_middleware_factory(
    limiter_key: web.AppKey[RateLimiter], default_policy: BucketPolicy
) -> Middleware:
    @web.middleware
    async def ratelimit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        auth = request.get(AUTH)
        if auth is None:
            return await handler(request)
        key = auth.key
        policy = default_policy
        if key.rate_limit_capacity or key.rate_limit_refill:  # the key's own limits
            policy = BucketPolicy(
                capacity=key.rate_limit_capacity or default_policy.capacity,
                refill_per_second=key.rate_limit_refill or default_policy.refill_per_second,
            )

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
        return await handler(request)

    return ratelimit_middleware
