"""Keys changed through the admin API, across two ``serve`` processes on one store: the
process that revokes or rolls a key refuses its old secret at once, the other within the
key cache time (``auth.key_cache_seconds``: 1 s in the test profile); and no secret, of an
admin key or a workspace key, is written to either process's log."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from pollybot_leads.accounts.repository import AccountRepository
from pollybot_leads.settings import load_settings
from pollybot_leads.store.client import Mongo
from pollybot_leads.store.embedded import free_port
from tests.faults.harness import REQUEST_TIMEOUT, ApiServer, Store, server_env

KEY_CACHE_SECONDS = load_settings({"PB_CONFIG": "test"}).key_cache_seconds


def logged_server(store: Store, database: str, log: Path) -> ApiServer:
    """A server logging every request (the access log at INFO, as JSON)."""
    env = {**server_env(store.uri, database), "LOG_LEVEL": "INFO", "LOG_FORMAT": "json"}
    return ApiServer(free_port(), env, log)


@pytest.fixture
def pair(store: Store, database: str, tmp_path: Path) -> Iterator[tuple[ApiServer, ApiServer]]:
    one = logged_server(store, database, tmp_path / "one.log")
    two = logged_server(store, database, tmp_path / "two.log")
    one.start()
    try:
        two.start()
        try:
            yield one, two
        finally:
            two.stop()
    finally:
        one.stop()


async def call(
    http: ClientSession, method: str, url: str, secret: str, **kw: Any
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {secret}"}
    async with http.request(method, url, headers=headers, timeout=REQUEST_TIMEOUT, **kw) as resp:
        return resp.status, await resp.json()


async def refused_within(http: ClientSession, url: str, secret: str) -> float:
    """Seconds until ``secret`` is refused (401) at ``url``."""
    began = time.monotonic()
    while (await call(http, "GET", url, secret))[0] == 200:
        assert time.monotonic() - began < KEY_CACHE_SECONDS + 2.0, "still accepted"
        await asyncio.sleep(0.05)
    return time.monotonic() - began


async def test_a_rolled_or_revoked_key_is_refused_here_at_once_and_there_within_the_cache_time(
    store: Store, database: str, pair: tuple[ApiServer, ApiServer], http: ClientSession
):
    one, two = pair
    mongo = Mongo(store.uri, database)
    try:
        _, admin = await AccountRepository(mongo).create_admin_key(name="platform")
    finally:
        await mongo.close()
    admin_api = one.base_url + "/api/v1/admin"
    status, ws = await call(http, "POST", admin_api + "/workspaces", admin, json={"name": "P"})
    assert status == 201, ws
    ws_id = ws["data"]["id"]
    status, bot = await call(
        http, "POST", f"{admin_api}/workspaces/{ws_id}/chatbots", admin, json={"name": "B"}
    )
    assert status == 201, bot
    status, key = await call(
        http, "POST", f"{admin_api}/workspaces/{ws_id}/keys", admin, json={"name": "K"}
    )
    assert status == 201, key
    path = f"/api/v1/chatbots/{bot['data']['id']}/leads"
    first = key["data"]["key"]
    for server in (one, two):  # each caches the key
        assert (await call(http, "GET", server.base_url + path, first))[0] == 200

    status, rolled = await call(
        http, "POST", f"{admin_api}/keys/{key['data']['id']}/roll", admin, json={}
    )
    assert status == 200, rolled
    second = rolled["data"]["key"]
    assert (await call(http, "GET", one.base_url + path, first))[0] == 401  # at once
    assert await refused_within(http, two.base_url + path, first) <= KEY_CACHE_SECONDS + 1.0
    for server in (one, two):
        assert (await call(http, "GET", server.base_url + path, second))[0] == 200

    status, _ = await call(http, "DELETE", f"{admin_api}/keys/{key['data']['id']}", admin)
    assert status == 200
    assert (await call(http, "GET", one.base_url + path, second))[0] == 401
    assert await refused_within(http, two.base_url + path, second) <= KEY_CACHE_SECONDS + 1.0

    for server in (one, two):
        server.stop()
        log = server.log_path.read_text()
        # The access log saw the requests (by route template, and key id: never a secret).
        assert "/api/v1/chatbots/{chatbotId}/leads" in log and key["data"]["id"] in log
        if server is one:
            assert "/api/v1/admin/workspaces" in log and '"keyId": "adk_' in log
        for secret in (admin, first, second):
            assert secret not in log and secret.split("_", 1)[1] not in log
