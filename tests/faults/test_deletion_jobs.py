"""A workspace's deletion survives the death of the server running it: the API server is
SIGKILLed while its job is part way through, and once a server runs again (and the dead
one's lease has lapsed) the job finishes; nothing of the workspace is left in any
collection, and the other workspace of the store is whole."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import ClientSession

from pollybot_leads.accounts.repository import AccountRepository
from pollybot_leads.admin.deletion import LEASE
from pollybot_leads.store.client import Mongo
from tests.faults.harness import REQUEST_TIMEOUT, ApiServer, Store, Tenant, create_tenant, direct_db
from tests.store_scan import copies_in_store, person, values_of

BATCHES = 8  # of 100 leads


async def _json(http: ClientSession, method: str, url: str, **kw: Any) -> tuple[int, Any]:
    async with http.request(method, url, timeout=REQUEST_TIMEOUT, **kw) as resp:
        return resp.status, await resp.json()


async def test_a_workspace_deletion_cut_by_a_sigkill_finishes_after_the_restart(
    store: Store, database: str, tenant: Tenant, server: ApiServer, http: ClientSession
):
    base = server.base_url
    kept = await create_tenant(store.uri, database)
    mongo = Mongo(store.uri, database)
    try:
        _, admin_key = await AccountRepository(mongo).create_admin_key(name="faults")
    finally:
        await mongo.close()
    admin = {"Authorization": f"Bearer {admin_key}"}
    bodies = [person() for _ in range(BATCHES * 100)]
    for start in range(0, len(bodies), 100):
        status, body = await _json(
            http,
            "POST",
            base + tenant.leads_path + "/batch",
            headers=tenant.headers,
            json={"leads": bodies[start : start + 100]},
        )
        assert status == 200, body
    other = person()
    status, _ = await _json(http, "POST", base + kept.leads_path, headers=kept.headers, json=other)
    assert status == 201
    async with direct_db(store.uri, database) as db:
        workspace = (await db["chatbots"].find_one({"_id": tenant.chatbot_id}))["workspaceId"]

    status, shown = await _json(
        http, "DELETE", f"{base}/api/v1/admin/workspaces/{workspace}?confirm=true", headers=admin
    )
    assert status == 202 and shown["data"]["status"] == "deleting", shown
    status, _ = await _json(http, "GET", base + tenant.leads_path, headers=tenant.headers)
    assert status == 401  # its keys at once

    # Kill the server once the job has begun removing leads, before it is done.
    async with direct_db(store.uri, database) as db:
        deadline = time.monotonic() + 30
        while True:
            job = await db["deletion_jobs"].find_one({"_id": workspace})
            if job and job["removed"].get("leads"):
                break
            assert time.monotonic() < deadline, job
            await asyncio.sleep(0.01)
        server.kill()
        job = await db["deletion_jobs"].find_one({"_id": workspace})
        assert job["state"] == "running", "the job ended before the kill: nothing tested"
        assert await db["workspaces"].find_one({"_id": workspace}) is not None

    server.start()
    url = f"{base}/api/v1/admin/workspaces/{workspace}"
    deadline = time.monotonic() + LEASE.total_seconds() + 30
    while (status := (await _json(http, "GET", url, headers=admin))[0]) == 200:
        assert time.monotonic() < deadline, "the deletion did not resume"
        await asyncio.sleep(0.2)
    assert status == 404

    async with direct_db(store.uri, database) as db:
        job = await db["deletion_jobs"].find_one({"_id": workspace})
        # Counted step by step: a step the kill cut short is done again, its count lost.
        assert job["state"] == "done" and len(bodies) - 100 <= job["removed"]["leads"] <= len(
            bodies
        )
        sample = [v for body in bodies[::97] for v in values_of(body)]
        left = await copies_in_store(db, [*sample, workspace, tenant.chatbot_id])
        assert {c.collection for c in left} <= {"audit_log", "deletion_jobs"}, left[:5]
        assert await db["leads"].count_documents({"chatbotId": tenant.chatbot_id}) == 0
        assert await copies_in_store(db, values_of(other)[:1])  # the other workspace's
    status, _ = await _json(http, "GET", base + kept.leads_path, headers=kept.headers)
    assert status == 200
