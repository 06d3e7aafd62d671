"""Fixtures of the HTTP tests that build apps of their own (rate limiting, abuse)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from pollybot_leads.app import create_app
from pollybot_leads.settings import Settings
from tests.redis_server import RedisServer

from .helpers import Serve


@pytest.fixture
async def fresh_redis(redis_server: RedisServer) -> RedisServer:
    """The session's server, emptied: failure buckets per address start full."""
    client = Redis.from_url(redis_server.url)
    try:
        await client.flushall()
    finally:
        await client.aclose()
    return redis_server


@pytest.fixture
async def serve(settings: Settings, mongo: Any) -> AsyncIterator[Serve]:
    """Start apps built by create_app from the test settings with ``changes``."""
    started: list[TestClient] = []

    async def start(redis: RedisServer | None = None, **changes: Any) -> TestClient:
        """``redis``: limit through that server; else the in-process bucket."""
        changes.setdefault("redis_url", redis.url if redis is not None else "")
        # Generous, so that a busy machine does not turn exactness into the failure policy;
        # the tests of Redis trouble set the default 100 ms.
        changes.setdefault("redis_timeout_ms", 2000)
        client = TestClient(TestServer(create_app(settings.replace(**changes))))
        await client.start_server()
        started.append(client)
        return client

    yield start
    for client in started:
        await client.close()
