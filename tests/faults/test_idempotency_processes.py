"""Idempotency keys across real processes: two API servers on one store, and restarts of
the server, of Redis and of the store (SIGKILL) between a request and its retry."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import ClientSession

from pollybot_leads.store.embedded import free_port
from tests.faults.harness import ApiServer, Store, Tenant, list_total, server_env
from tests.redis_server import RedisServer

BODY = {"name": "Ann", "email": "ann@example.com", "metadata": {"n": 1}}
# Fifty writes at once on two fresh servers can find a write lane full: the refused ones
# get 503 with Retry-After and nothing done, and are sent again, as a client would.
RETRIES = 5


async def post_until_taken(
    http: ClientSession, url: str, body: dict, headers: dict[str, str]
) -> tuple[int, dict]:
    """POST, sent again after Retry-After while the answer is 503: (status, JSON body)."""
    for _ in range(RETRIES):
        async with http.post(url, json=body, headers=headers) as resp:
            if resp.status != 503:
                return resp.status, await resp.json()
            await asyncio.sleep(float(resp.headers["Retry-After"]))
    raise AssertionError(f"503 {RETRIES} times in a row")


@pytest.fixture
def second(store: Store, database: str, server: ApiServer, tmp_path: Path) -> Iterator[ApiServer]:
    """A second API server process on the same store, beside ``server``."""
    other = ApiServer(free_port(), server_env(store.uri, database), tmp_path / "second.log")
    other.start()
    try:
        yield other
    finally:
        other.stop()


async def test_fifty_identical_posts_across_two_servers_create_one_lead(
    tenant: Tenant, server: ApiServer, second: ApiServer, http: ClientSession
):
    headers = {**tenant.headers, "Idempotency-Key": str(uuid.uuid4())}

    async def post(n: int) -> tuple[int, dict]:
        base = (server, second)[n % 2].base_url
        return await post_until_taken(http, base + tenant.leads_path, BODY, headers)

    results = await asyncio.gather(*(post(n) for n in range(50)))
    statuses = {status for status, _ in results}
    assert statuses <= {201, 409}, results
    ids = {body["data"]["id"] for status, body in results if status == 201}
    assert len(ids) == 1
    for status, body in results:
        if status == 409:
            assert body["error"]["code"] == "IDEMPOTENCY_IN_PROGRESS"
    assert await list_total(http, server.base_url, tenant) == 1


async def test_a_kept_result_survives_restarts_of_server_redis_and_store(
    store: Store,
    database: str,
    tenant: Tenant,
    http: ClientSession,
    tmp_path: Path,
):
    redis = RedisServer().start()
    env = {**server_env(store.uri, database), "REDIS_URL": redis.url}
    server = ApiServer(free_port(), env, tmp_path / "server.log")
    server.start()
    try:
        headers = {**tenant.headers, "Idempotency-Key": str(uuid.uuid4())}
        url = server.base_url + tenant.leads_path
        async with http.post(url, json=BODY, headers=headers) as resp:
            assert resp.status == 201
            first = await resp.read()
        server.kill()  # SIGKILL right after the answer
        redis.stop()
        redis.start()  # a fresh Redis: it keeps nothing
        store.kill()
        store.start()
        server.start()
        async with ClientSession() as fresh:  # the old connections died with the server
            async with fresh.post(url, json=BODY, headers=headers) as resp:
                assert resp.status == 201
                assert resp.headers["Idempotent-Replayed"] == "true"
                assert await resp.read() == first
            assert await list_total(fresh, server.base_url, tenant) == 1
    finally:
        server.stop()
        redis.close()


# A phone in four forms of one number (E.164 +14155552671); an external id as such.
PHONES = ["+1 (415) 555-2671", "+14155552671", "+1-415-555-2671", "+1 415 555 2671"]


@pytest.mark.parametrize("on", ["email", "phone", "externalId"])
async def test_fifty_upserts_of_a_new_email_phone_or_external_id_across_two_servers_leave_one_lead(
    tenant: Tenant, server: ApiServer, second: ApiServer, http: ClientSession, on: str
):
    async def upsert(n: int) -> int:
        base = (server, second)[n % 2].base_url
        body = {"name": "Zed", "email": "zed@example.com", "metadata": {f"k{n}": n}}
        if on == "phone":  # each with an email of its own: the phone alone matches
            body.update(email=f"zed{n}@example.com", phone=PHONES[n % len(PHONES)])
        if on == "externalId":
            body.update(email=f"zed{n}@example.com", externalId="crm-7")
        url = base + tenant.leads_path + f"?upsert={on}"
        status, _ = await post_until_taken(http, url, body, tenant.headers)
        return status

    statuses = await asyncio.gather(*(upsert(n) for n in range(50)))
    assert sorted(statuses) == [200] * 49 + [201]
    assert await list_total(http, server.base_url, tenant) == 1
    async with http.get(server.base_url + tenant.leads_path, headers=tenant.headers) as resp:
        (lead,) = (await resp.json())["data"]["leads"]
    assert lead["metadata"] == {f"k{n}": n for n in range(50)}
