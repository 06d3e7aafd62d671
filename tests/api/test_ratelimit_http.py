"""Rate limiting as a client sees it: status, envelope and headers, over real HTTP.

Apps are built by ``create_app`` with a Redis bucket on a private redis-server (started
here on a free port, never a shared one), or with the in-process bucket where that is the
point. Setup data (leads) goes through the session ``api``, whose in-process limiter is
separate, so it never spends the tokens of the app under test.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from tests.conftest import Tenant, make_tenant
from tests.redis_server import RedisServer

from .helpers import (
    FROZEN,
    Serve,
    bad_secret,
    create_lead,
    data_of,
    error_of,
    limits,
    no_limit_headers,
    refused,
)


def bad_credentials() -> list[dict[str, str]]:
    return [
        {"Authorization": f"Bearer {bad_secret()}"},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": f"Bearer {bad_secret()}"},
        {"Authorization": f"Basic {secrets.token_hex(8)}"},
        {},
        {"Authorization": f"Bearer {bad_secret()}"},
    ]


async def get_missing_lead(client: TestClient, tenant: Tenant) -> ClientResponse:
    return await client.get(tenant.lead_url("lead_" + "0" * 16), headers=tenant.headers)


# --- limiting through Redis ---------------------------------------------------------------


async def test_exactly_capacity_requests_pass_under_concurrency(
    serve: Serve, redis_server: RedisServer, accounts, api
) -> None:
    tenant = await make_tenant(accounts)
    await create_lead(api, tenant)
    client = await serve(
        redis=redis_server, ratelimit_capacity=10, ratelimit_refill_per_second=FROZEN
    )

    responses = await asyncio.gather(
        *(client.get(tenant.leads_url, headers=tenant.headers) for _ in range(60))
    )

    assert all(limits(r) for r in responses)  # every one decided by Redis
    ok = [r for r in responses if r.status == 200]
    limited = [r for r in responses if r.status != 200]
    assert len(ok) == 10 and len(limited) == 50
    for resp in ok:
        assert len((await data_of(resp))["leads"]) == 1
    assert sorted(limits(r)[1] for r in ok) == list(range(10))  # one token each
    for resp in limited:
        assert await refused(resp) == 1000  # 1 token at 0.001/s
        assert limits(resp)[:2] == (10, 0)


async def test_two_apps_with_their_own_pools_share_one_bucket(
    serve: Serve, redis_server: RedisServer, accounts
) -> None:
    tenant = await make_tenant(accounts)
    changes = {"ratelimit_capacity": 8, "ratelimit_refill_per_second": FROZEN}
    first = await serve(redis=redis_server, **changes)
    second = await serve(redis=redis_server, **changes)  # its own Redis pool

    remaining = []
    for client in (first, second, first, second):
        resp = await client.get(tenant.leads_url, headers=tenant.headers)
        await data_of(resp)
        remaining.append(limits(resp)[1])
    assert remaining == [7, 6, 5, 4]  # one bucket counting down across both apps

    responses = await asyncio.gather(
        *(c.get(tenant.leads_url, headers=tenant.headers) for c in (first, second) * 10)
    )
    assert sum(r.status == 200 for r in responses) == 4
    for resp in (r for r in responses if r.status != 200):
        await refused(resp)


async def test_header_values_count_down_on_every_authenticated_response(
    serve: Serve, redis_server: RedisServer, accounts
) -> None:
    tenant = await make_tenant(accounts)
    client = await serve(redis=redis_server, ratelimit_capacity=3, ratelimit_refill_per_second=0.01)

    first = await client.get(tenant.leads_url, headers=tenant.headers)
    await data_of(first)
    assert limits(first) == (3, 2, 100)  # Reset: 1 token short at 0.01/s

    missing = await get_missing_lead(client, tenant)  # an error, but an authenticated one
    await error_of(missing, 404, "LEAD_NOT_FOUND")
    assert limits(missing) == (3, 1, 200)

    third = await client.get(tenant.leads_url, headers=tenant.headers)
    await data_of(third)
    assert limits(third) == (3, 0, 300)

    fourth = await client.get(tenant.leads_url, headers=tenant.headers)
    assert await refused(fourth) == 100  # one token at 0.01/s
    assert limits(fourth) == (3, 0, 300)

    # Not authenticated: no key, so no key's bucket to report.
    anonymous = await client.get(tenant.leads_url)
    await error_of(anonymous, 401, "UNAUTHORIZED")
    assert no_limit_headers(anonymous)


async def test_per_key_override_and_isolation_between_keys(
    serve: Serve, redis_server: RedisServer, accounts
) -> None:
    small = await make_tenant(accounts, rate_limit_capacity=3, rate_limit_refill=FROZEN)
    plain = await make_tenant(accounts)
    # A second key of the same workspace has a bucket of its own.
    sibling_key = await accounts.create_key(workspace_id=small.workspace_id)
    sibling = Tenant(
        small.workspace_id, small.chatbot_id, sibling_key.record.id, sibling_key.secret
    )
    client = await serve(
        redis=redis_server, ratelimit_capacity=50, ratelimit_refill_per_second=FROZEN
    )

    seen = []
    for _ in range(3):
        resp = await client.get(small.leads_url, headers=small.headers)
        await data_of(resp)
        seen.append(limits(resp)[:2])
    assert seen == [(3, 2), (3, 1), (3, 0)]
    resp = await client.get(small.leads_url, headers=small.headers)
    assert await refused(resp) == 1000
    assert limits(resp)[0] == 3

    for other in (plain, sibling):
        resp = await client.get(other.leads_url, headers=other.headers)
        await data_of(resp)
        assert limits(resp)[:2] == (50, 49)

    resp = await client.get(small.leads_url, headers=small.headers)  # still empty
    await refused(resp)


async def test_tokens_come_back_at_the_refill_rate(
    serve: Serve, redis_server: RedisServer, accounts
) -> None:
    tenant = await make_tenant(accounts)
    client = await serve(redis=redis_server, ratelimit_capacity=3, ratelimit_refill_per_second=2.0)

    async def get() -> ClientResponse:
        return await client.get(tenant.leads_url, headers=tenant.headers)

    assert [(await get()).status for _ in range(3)] == [200, 200, 200]
    empty = await get()
    assert await refused(empty) == 1  # half a second, rounded up
    assert limits(empty)[2] == 2  # 3 tokens at 2/s: 1.5 s, rounded up

    await asyncio.sleep(0.6)  # one token back, not two
    one = await get()
    await data_of(one)
    assert limits(one)[1] == 0
    await refused(await get())

    await asyncio.sleep(1.6)  # full again (capped at capacity)
    full = await get()
    await data_of(full)
    assert limits(full)[:2] == (3, 2)


# --- Redis trouble ------------------------------------------------------------------------


async def timed_get(client: TestClient, tenant: Tenant) -> tuple[ClientResponse, float]:
    start = time.perf_counter()
    resp = await client.get(tenant.leads_url, headers=tenant.headers)
    await resp.read()
    return resp, time.perf_counter() - start


async def until_limited_again(client: TestClient, tenant: Tenant) -> ClientResponse:
    """Request until the headers are back (Redis answered); at most a few seconds."""
    deadline = time.monotonic() + 5
    while True:
        resp, elapsed = await timed_get(client, tenant)
        assert elapsed < 0.5
        if not no_limit_headers(resp):
            return resp
        assert time.monotonic() < deadline, "limiting did not resume after Redis came back"
        await asyncio.sleep(0.05)


async def serve_through_outage(serve: Serve, redis: RedisServer, **changes: object) -> TestClient:
    """An app for Redis outage tests: 4 tokens per key and no refill worth counting;
    Redis answers within 100 ms or counts as down, and is tried again after 0.2 s."""
    return await serve(
        redis=redis,
        ratelimit_capacity=4,
        ratelimit_refill_per_second=FROZEN,
        ratelimit_failure_backoff_seconds=0.2,
        redis_timeout_ms=100,
        **changes,
    )


async def test_redis_stopped_policy_allow_serves_without_headers_then_resumes(
    serve: Serve, own_redis_server: RedisServer, accounts
) -> None:
    tenant = await make_tenant(accounts)
    client = await serve_through_outage(serve, own_redis_server, ratelimit_failure_policy="allow")
    resp, _ = await timed_get(client, tenant)
    assert resp.status == 200 and limits(resp)[:2] == (4, 3)

    own_redis_server.stop()
    for _ in range(8):  # more than the bucket holds: nobody is refused
        resp, elapsed = await timed_get(client, tenant)
        await data_of(resp)
        assert elapsed < 0.5
        assert no_limit_headers(resp)
        await asyncio.sleep(0.03)  # spans a back-off, so Redis is probed again

    own_redis_server.start()  # empty again: the bucket starts full, the script is reloaded
    resp = await until_limited_again(client, tenant)
    await data_of(resp)
    assert limits(resp)[:2] == (4, 3)
    statuses = [(await timed_get(client, tenant))[0].status for _ in range(4)]
    assert statuses == [200, 200, 200, 429]


async def test_redis_hung_policy_allow_answers_within_the_timeout(
    serve: Serve, own_redis_server: RedisServer, accounts
) -> None:
    tenant = await make_tenant(accounts)
    client = await serve_through_outage(serve, own_redis_server)
    resp, _ = await timed_get(client, tenant)
    assert limits(resp)[1] == 3

    own_redis_server.pause()  # connections accepted, nothing answered
    try:
        for _ in range(4):
            resp, elapsed = await timed_get(client, tenant)
            await data_of(resp)
            assert elapsed < 0.5
            assert no_limit_headers(resp)
            await asyncio.sleep(0.1)
    finally:
        own_redis_server.resume()

    resp = await until_limited_again(client, tenant)
    await data_of(resp)
    assert limits(resp)[0] == 4


async def test_redis_stopped_policy_deny_is_503_then_resumes(
    serve: Serve, own_redis_server: RedisServer, accounts
) -> None:
    tenant = await make_tenant(accounts)
    client = await serve_through_outage(serve, own_redis_server, ratelimit_failure_policy="deny")
    resp, _ = await timed_get(client, tenant)
    assert resp.status == 200

    own_redis_server.stop()
    for _ in range(3):
        resp, elapsed = await timed_get(client, tenant)
        assert elapsed < 0.5
        await error_of(resp, 503, "SERVICE_UNAVAILABLE")
        assert int(resp.headers["Retry-After"]) >= 1
        assert no_limit_headers(resp)

    own_redis_server.start()
    deadline = time.monotonic() + 5
    while resp.status == 503 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        resp, elapsed = await timed_get(client, tenant)
        assert elapsed < 0.5
    await data_of(resp)
    assert limits(resp)[:2] == (4, 3)


# --- bad credentials ----------------------------------------------------------------------


async def test_bad_keys_from_one_address_are_limited_whatever_the_key(
    serve: Serve, fresh_redis: RedisServer, accounts
) -> None:
    tenant, newcomer = await make_tenant(accounts), await make_tenant(accounts)
    client = await serve(
        redis=fresh_redis,
        auth_failure_capacity=6,
        auth_failure_refill_per_second=FROZEN,
        ratelimit_capacity=5,
        key_cache_seconds=30,
    )
    await data_of(await client.get(tenant.leads_url, headers=tenant.headers))  # known now

    for headers in bad_credentials():  # six different failures: the bucket's six tokens
        resp = await client.get(tenant.leads_url, headers=headers)
        await error_of(resp, 401, "UNAUTHORIZED")
        assert no_limit_headers(resp)
    for headers in bad_credentials()[:3]:
        resp = await client.get(tenant.leads_url, headers=headers)
        assert await refused(resp) == 1000
        assert no_limit_headers(resp)

    # A key the server knows still works from that address, with its own bucket.
    resp = await client.get(tenant.leads_url, headers=tenant.headers)
    await data_of(resp)
    assert limits(resp)[:2] == (5, 4)
    # One it would have to look up is refused like a bad one until the address has a
    # token again: a client over its limit never gets a key looked up.
    resp = await client.get(newcomer.leads_url, headers=newcomer.headers)
    assert await refused(resp) == 1000
    assert no_limit_headers(resp)


async def test_a_good_key_gives_back_the_token_its_look_up_took(
    serve: Serve, fresh_redis: RedisServer, accounts
) -> None:
    tenants = [await make_tenant(accounts) for _ in range(4)]
    client = await serve(
        redis=fresh_redis, auth_failure_capacity=2, auth_failure_refill_per_second=FROZEN
    )
    # Four keys new to the server, each looked up (one of them by 20 requests at once):
    # none of them spends the address's two tokens for bad credentials.
    first = tenants[0]
    answers = await asyncio.gather(
        *(client.get(first.leads_url, headers=first.headers) for _ in range(20))
    )
    for resp in answers:
        await data_of(resp)
    for tenant in tenants[1:]:
        await data_of(await client.get(tenant.leads_url, headers=tenant.headers))
    for _ in range(2):
        resp = await client.get(
            first.leads_url, headers={"Authorization": f"Bearer {bad_secret()}"}
        )
        await error_of(resp, 401, "UNAUTHORIZED")
    resp = await client.get(first.leads_url, headers={"Authorization": f"Bearer {bad_secret()}"})
    await refused(resp)


async def test_x_forwarded_for_is_ignored_from_an_untrusted_peer(
    serve: Serve, fresh_redis: RedisServer, accounts
) -> None:
    tenant = await make_tenant(accounts)
    client = await serve(
        redis=fresh_redis, auth_failure_capacity=3, auth_failure_refill_per_second=FROZEN
    )

    statuses = []
    for n in range(5):  # a new "address" every time: all of them are the peer's
        resp = await client.get(
            tenant.leads_url,
            headers={
                "Authorization": f"Bearer {bad_secret()}",
                "X-Forwarded-For": f"203.0.113.{n + 1}",
            },
        )
        statuses.append(resp.status)
        await resp.read()
    assert statuses == [401, 401, 401, 429, 429]


async def test_x_forwarded_for_is_honoured_from_a_trusted_proxy(
    serve: Serve, fresh_redis: RedisServer, accounts
) -> None:
    tenant = await make_tenant(accounts)
    client = await serve(
        redis=fresh_redis,
        auth_failure_capacity=2,
        auth_failure_refill_per_second=FROZEN,
        trusted_proxies=("127.0.0.1",),
    )

    async def attempt(forwarded_for: str | None) -> ClientResponse:
        headers = {"Authorization": f"Bearer {bad_secret()}"}
        if forwarded_for is not None:
            headers["X-Forwarded-For"] = forwarded_for
        return await client.get(tenant.leads_url, headers=headers)

    for _ in range(2):
        await error_of(await attempt("203.0.113.1"), 401, "UNAUTHORIZED")
    await refused(await attempt("203.0.113.1"))
    # Prepending hops does not help: the client is the last hop the proxy did not add.
    await refused(await attempt("198.51.100.7, 203.0.113.1"))

    # Another client behind the same proxy, and the proxy itself, have their own buckets.
    await error_of(await attempt("203.0.113.2"), 401, "UNAUTHORIZED")
    await error_of(await attempt(None), 401, "UNAUTHORIZED")


# --- embedded mode ------------------------------------------------------------------------


async def test_in_process_bucket_gives_the_same_headers_and_429s(
    serve: Serve, redis_server: RedisServer, accounts
) -> None:
    policy = {"ratelimit_capacity": 3, "ratelimit_refill_per_second": 0.01}
    shared = await serve(redis=redis_server, **policy)
    local = await serve(**policy)  # no redis_url: the in-process bucket

    async def sequence(client: TestClient) -> list[tuple[Any, ...]]:
        tenant = await make_tenant(accounts)
        seen = []
        for _ in range(3):
            resp = await client.get(tenant.leads_url, headers=tenant.headers)
            await data_of(resp)
            seen.append((resp.status, *limits(resp)))
        resp = await get_missing_lead(client, tenant)
        seen.append((resp.status, *limits(resp), await refused(resp)))
        return seen

    expected = [(200, 3, 2, 100), (200, 3, 1, 200), (200, 3, 0, 300), (429, 3, 0, 300, 100)]
    assert await sequence(local) == expected
    assert await sequence(shared) == expected


async def test_limiter_switched_off_limits_nothing_and_sends_no_headers(
    serve: Serve, redis_server: RedisServer, accounts
) -> None:
    tenant = await make_tenant(accounts)
    client = await serve(
        redis=redis_server,
        ratelimit_enabled=False,
        ratelimit_capacity=1,
        ratelimit_refill_per_second=FROZEN,
    )
    for _ in range(3):
        resp = await client.get(tenant.leads_url, headers=tenant.headers)
        await data_of(resp)
        assert no_limit_headers(resp)
