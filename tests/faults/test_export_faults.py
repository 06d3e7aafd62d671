"""An export and a stalled store (SIGSTOP), on real processes: before the first byte the
client gets the 503 envelope; after it, a cut transfer, within the per-read budget."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from aiohttp import ClientPayloadError, ClientSession, ClientTimeout

from pollybot_leads.leads.documents import build_lead_document
from pollybot_leads.leads.repository import LeadRepository
from pollybot_leads.store.client import Mongo
from pollybot_leads.timeutil import utcnow
from tests.faults.harness import ApiServer, Store, Tenant

BUDGET = 2.5  # seconds: the per-read budget (1.5 s) and the cap's slack, with room
LEADS = 5000  # ten reads of 500: a stall lands in the middle


async def seed(store: Store, database: str, tenant: Tenant, n: int) -> None:
    mongo = Mongo(store.uri, database)
    try:
        await mongo.connect()
        repo = LeadRepository(mongo)
        now = utcnow()
        for start in range(0, n, 1000):
            docs = [
                build_lead_document(
                    tenant.chatbot_id,
                    "ws_0000000000000000",
                    {"name": f"Lead {i}", "email": f"lead{i}@example.com"},
                    now - timedelta(minutes=i),
                )
                for i in range(start, min(n, start + 1000))
            ]
            await repo.insert_many(docs=docs)
    finally:
        await mongo.close()


async def test_a_store_stalled_before_the_export_is_a_503(
    store: Store, server: ApiServer, tenant: Tenant, http: ClientSession
) -> None:
    url = server.base_url + tenant.leads_path + "/export"
    async with http.get(url, headers=tenant.headers) as resp:  # connections warm
        assert resp.status == 200
        await resp.read()
    store.pause()
    try:
        started = time.monotonic()
        async with http.get(url, headers=tenant.headers) as resp:
            # Before the body: a stream begun (200, chunked) would be cut while read.
            assert resp.status == 503, (resp.status, dict(resp.headers))
            body = await resp.json()
        elapsed = time.monotonic() - started
    finally:
        store.resume()
    assert body["error"]["code"] == "SERVICE_UNAVAILABLE" and "Retry-After" in resp.headers
    assert elapsed < BUDGET


async def test_a_store_stalled_during_the_export_cuts_the_transfer(
    store: Store, database: str, server: ApiServer, tenant: Tenant
) -> None:
    await seed(store, database, tenant, LEADS)
    url = server.base_url + tenant.leads_path + "/export"
    lines = 0
    async with ClientSession(timeout=ClientTimeout(total=30)) as http:
        async with http.get(url, headers=tenant.headers) as resp:
            assert resp.status == 200
            await resp.content.readline()
            lines = 1
            store.pause()
            stalled = time.monotonic()
            try:
                with pytest.raises(ClientPayloadError):
                    while await resp.content.readline():
                        lines += 1
                cut_after = time.monotonic() - stalled
            finally:
                store.resume()
    assert lines < LEADS, "the export ended although the store was stalled"
    assert cut_after < BUDGET + 1.0, cut_after  # + what was on its way before the stall
