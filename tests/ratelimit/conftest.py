"""Fixtures for the rate-limiter tests: a private redis-server, never the shared one."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from pollybot_leads.ratelimit.redis_bucket import RedisTokenBucket
from tests.redis_server import RedisServer, RedisServerError, find_redis_server

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _unavailable(reason: str) -> None:
    if IN_CI:  # in CI a missing Redis is a failure, never a skip
        pytest.fail(f"{reason} (CI=true: Redis tests must run)", pytrace=False)
    pytest.skip(reason)


def _start_server() -> RedisServer:
    if find_redis_server() is None:
        _unavailable("redis-server not found (set REDIS_SERVER_BIN or put it on PATH)")
    try:
        return RedisServer().start()
    except RedisServerError as exc:
        _unavailable(f"could not start redis-server: {exc}")
        raise  # not reached


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One private redis-server for the session; tests must leave it running."""
    server = _start_server()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def own_redis_server() -> Iterator[RedisServer]:
    """A redis-server of the test's own, free to be stopped, paused and restarted."""
    server = _start_server()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A client of the session server, which is flushed (data and scripts) first."""
    if not redis_server.running:  # a test stopped it: bring it back
        redis_server.start()
    client = Redis.from_url(redis_server.url)
    try:
        await client.flushall()
        await client.script_flush()
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def make_bucket(
    redis_client: Redis, redis_server: RedisServer
) -> AsyncIterator[Callable[..., RedisTokenBucket]]:
    """Build RedisTokenBuckets (own client from the URL unless ``client=`` is given)."""
    made: list[RedisTokenBucket] = []

    def make(client: Redis | str | None = None, **kwargs: Any) -> RedisTokenBucket:
        kwargs.setdefault("timeout_ms", 2000)
        bucket = RedisTokenBucket(redis_server.url if client is None else client, **kwargs)
        made.append(bucket)
        return bucket

    try:
        yield make
    finally:
        for bucket in made:
            await bucket.close()
