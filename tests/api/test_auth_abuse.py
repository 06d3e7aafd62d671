"""Abuse costs the abuser, not the store: floods of bad keys, and of a good key on chatbots
it does not have, are refused by the rate limiter and cost the store a bounded number of
queries (issue 19, items 1 and 2).

What the store did is read from its own counters: ``serverStatus.opcounters``, every kind
summed (query, getmore, command, insert, update, delete), less the one ``serverStatus`` that
reads them. That is everything the store was asked in the meantime, by any client of it
(the drivers' own monitoring included), so it can only overstate what the flood cost.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, make_mocked_request

from pollybot_leads.accounts.auth import Authenticator
from pollybot_leads.accounts.repository import AccountRepository
from pollybot_leads.errors import ChatbotNotFound, Unauthorized
from pollybot_leads.ratelimit.base import BucketPolicy
from pollybot_leads.ratelimit.memory import InProcessTokenBucket
from tests.conftest import make_tenant
from tests.redis_server import RedisServer

from .helpers import FROZEN, LIMIT_HEADERS, Serve, bad_secret, error_of

FLOOD = 2000
STORE_OPERATIONS_MAX = 50


async def store_operations(mongo: Any) -> int:
    status = await mongo.client.admin.command("serverStatus")
    return sum(int(count) for count in status["opcounters"].values())


class Answer:
    """What a client read: the status, the headers and the error envelope's code."""

    def __init__(self, status: int, headers: Any, body: dict[str, Any]) -> None:
        self.status, self.headers = status, headers
        self.code = body.get("error", {}).get("code")

    @property
    def limits(self) -> tuple[int, int, int] | None:
        if not all(name in self.headers for name in LIMIT_HEADERS):
            return None
        return tuple(int(self.headers[name]) for name in LIMIT_HEADERS)  # type: ignore[return-value]


async def flood(client: TestClient, requests: list[tuple[str, dict[str, str]]]) -> list[Answer]:
    """Every request at once (the client keeps 100 connections at work)."""

    async def one(url: str, headers: dict[str, str]) -> Answer:
        async with client.get(url, headers=headers) as resp:
            return Answer(resp.status, resp.headers, await resp.json())

    return await asyncio.gather(*(one(url, headers) for url, headers in requests))


def unavailable(answers: list[Answer]) -> tuple[list[Answer], list[Answer]]:
    """The 503s a flood met (the store's own stalls: admission refuses what would wait
    past its budget), split by whether the key's token was taken first (they carry its
    headers) or not; each is a proper refusal, and they are a small part of the flood."""
    refused = [a for a in answers if a.status == 503]
    for answer in refused:
        assert answer.code == "SERVICE_UNAVAILABLE" and int(answer.headers["Retry-After"]) >= 1
    assert len(refused) <= len(answers) // 10, len(refused)
    return [a for a in refused if a.limits], [a for a in refused if not a.limits]


def random_chatbot() -> str:
    return "cb_" + secrets.token_hex(8)


async def test_a_flood_of_random_bad_keys_is_refused_before_the_store_is_asked(
    serve: Serve, fresh_redis: RedisServer, accounts, mongo
) -> None:
    tenant = await make_tenant(accounts)
    client = await serve(
        redis=fresh_redis, auth_failure_capacity=20, auth_failure_refill_per_second=FROZEN
    )
    requests = [
        (tenant.leads_url, {"Authorization": f"Bearer {bad_secret()}"}) for _ in range(FLOOD)
    ]

    before = await store_operations(mongo)
    answers = await flood(client, requests)
    used = await store_operations(mongo) - before - 1

    statuses = [a.status for a in answers]
    # Every failure token went to a 401; the rest were refused without asking the store
    # (429, or a 503 when a stall of the store made admission refuse them first).
    _, before_auth = unavailable(answers)
    assert statuses.count(401) == 20
    assert statuses.count(429) + len(before_auth) == FLOOD - 20
    for answer in (a for a in answers if a.status != 503):
        assert answer.code == ("UNAUTHORIZED" if answer.status == 401 else "RATE_LIMITED")
        assert answer.limits is None  # no key, no key's bucket
        if answer.status == 429:
            assert 990 <= int(answer.headers["Retry-After"]) <= 1000  # a token at 0.001/s
    assert used <= STORE_OPERATIONS_MAX, used


async def test_a_good_key_flooding_chatbots_it_does_not_have_spends_its_own_tokens(
    serve: Serve, fresh_redis: RedisServer, accounts, mongo
) -> None:
    tenant, other = await make_tenant(accounts), await make_tenant(accounts)
    client = await serve(
        redis=fresh_redis, ratelimit_capacity=30, ratelimit_refill_per_second=FROZEN
    )
    # Another workspace's chatbot is one of them: the same 404 as one that does not exist.
    urls = [f"/api/v1/chatbots/{random_chatbot()}/leads" for _ in range(FLOOD - 1)]
    urls.insert(7, other.leads_url)

    before = await store_operations(mongo)
    answers = await flood(client, [(url, tenant.headers) for url in urls])
    used = await store_operations(mongo) - before - 1

    not_found = [a for a in answers if a.status == 404]
    limited = [a for a in answers if a.status == 429]
    # Each of the key's 30 tokens went to one request (a 404, or a 503 when a stall of the
    # store cut the chatbot's look-up); the rest were refused before (429, or a 503 of
    # admission under such a stall).
    spent, before_token = unavailable(answers)
    assert len(not_found) + len(spent) == 30 and len(limited) + len(before_token) == FLOOD - 30
    assert all(a.code == "CHATBOT_NOT_FOUND" for a in not_found)
    assert sorted(a.limits[1] for a in [*not_found, *spent]) == list(range(30))  # one each
    for answer in limited:
        assert answer.code == "RATE_LIMITED"
        assert answer.limits is not None and answer.limits[:2] == (30, 0)
        assert 990 <= int(answer.headers["Retry-After"]) <= 1000
    assert used <= STORE_OPERATIONS_MAX, used

    # Its own chatbot: refused too (the bucket is empty); the other workspace's key is not.
    await error_of(await client.get(tenant.leads_url, headers=tenant.headers), 429, "RATE_LIMITED")
    resp = await client.get(other.leads_url, headers=other.headers)
    assert resp.status == 200 and resp.headers["X-RateLimit-Remaining"] == "29"


@pytest.fixture
def key_lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The digests authenticators ask the store for (the store still answers them)."""
    asked: list[str] = []
    original = AccountRepository.key_by_digest

    async def counting(self: AccountRepository, *, digest: str) -> Any:
        asked.append(digest)
        return await original(self, digest=digest)

    monkeypatch.setattr(AccountRepository, "key_by_digest", counting)
    return asked


async def test_a_bad_key_said_again_is_not_looked_up_again(
    serve: Serve, fresh_redis: RedisServer, accounts, key_lookups
) -> None:
    tenant = await make_tenant(accounts)
    revoked = await accounts.create_key(workspace_id=tenant.workspace_id)
    await accounts.revoke_key(key_id=revoked.record.id)
    client = await serve(redis=fresh_redis)
    for secret in (bad_secret(), revoked.secret):
        headers = {"Authorization": f"Bearer {secret}"}
        answers = await flood(client, [(tenant.leads_url, headers)] * 100)
        assert {(a.status, a.code) for a in answers} == {(401, "UNAUTHORIZED")}
    assert len(key_lookups) == 2  # once each, then answered from memory


async def test_floods_of_bad_keys_and_unknown_chatbots_never_push_good_ones_out(
    accounts, key_lookups, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caches are bounded, and the negative answers are kept apart from the good ones."""
    tenant = await make_tenant(accounts)
    chatbot_lookups: list[str] = []
    original = AccountRepository.chatbot_workspace

    async def counting(self: AccountRepository, *, chatbot_id: str) -> Any:
        chatbot_lookups.append(chatbot_id)
        return await original(self, chatbot_id=chatbot_id)

    monkeypatch.setattr(AccountRepository, "chatbot_workspace", counting)
    authenticator = Authenticator(
        accounts,
        key_cache_seconds=30,
        limiter=InProcessTokenBucket(),
        failure_policy=BucketPolicy(1000, 1000.0),
        cache_entries=5,
    )
    good = make_mocked_request("GET", "/", headers=tenant.headers)
    key = await authenticator.authenticate(good)
    await authenticator.authorize(key, tenant.chatbot_id, "leads:read")
    for _ in range(50):
        bad = make_mocked_request("GET", "/", headers={"Authorization": f"Bearer {bad_secret()}"})
        with pytest.raises(Unauthorized):
            await authenticator.authenticate(bad)
        with pytest.raises(ChatbotNotFound):
            await authenticator.authorize(key, random_chatbot(), "leads:read")

    assert await authenticator.authenticate(good) == key
    assert (
        await authenticator.authorize(key, tenant.chatbot_id, "leads:read")
    ).chatbot_id == tenant.chatbot_id
    assert len(key_lookups) == 51 and len(chatbot_lookups) == 51  # the good ones once each
