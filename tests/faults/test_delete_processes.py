"""Deletion across crashes: the API server is SIGKILLed while deletions and other writes
of the chatbot are in flight (some acknowledged a moment before), then the store is
SIGKILLed too, and both start again. A deletion leaves no follow-up work behind (it
redacts, drops and removes every copy in its own transaction), so whatever the kills
interrupted, a scan of every collection finds nothing of a lead whose deletion committed;
a deletion the kill cut short left the lead whole, and deleting it again leaves nothing
either."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from aiohttp import ClientError, ClientSession

from tests.faults.harness import REQUEST_TIMEOUT, ApiServer, Store, Tenant, direct_db
from tests.store_scan import collections_of, copies_in_store, person, values_of

DOOMED = 12
OTHER_WRITES = 40


async def call(
    http: ClientSession, method: str, url: str, tenant: Tenant, key: bool = True, **kw: Any
) -> tuple[int | None, Any]:
    headers = {**tenant.headers, **({"Idempotency-Key": str(uuid.uuid4())} if key else {})}
    try:
        async with http.request(
            method, url, headers=headers, timeout=REQUEST_TIMEOUT, **kw
        ) as resp:
            return resp.status, await resp.json()
    except (ClientError, TimeoutError):
        return None, None  # the server died under it


async def lead_with_copies(http: ClientSession, base: str, tenant: Tenant) -> tuple[str, list[str]]:
    """Created and changed under keys, upserted: copies in leads, events, kept results."""
    body = person()
    status, created = await call(http, "POST", base + tenant.leads_path, tenant, json=body)
    assert status == 201, created
    lead_id = created["data"]["id"]
    change = {"status": "contacted", "metadata": {"more": f"more-{lead_id}"}}
    status, _ = await call(http, "PUT", base + tenant.lead_path(lead_id), tenant, json=change)
    assert status == 200
    upsert = {"name": body["name"], "email": body["email"], "source": "chat"}
    status, _ = await call(
        http, "POST", base + tenant.leads_path + "?upsert=email", tenant, json=upsert
    )
    assert status == 200
    return lead_id, [*values_of(body), f"more-{lead_id}"]


async def test_no_copy_survives_a_sigkill_of_server_and_store_around_deletions(
    store: Store, database: str, tenant: Tenant, server: ApiServer, http: ClientSession
):
    base = server.base_url
    doomed = [await lead_with_copies(http, base, tenant) for _ in range(DOOMED)]
    values = {lead_id: found for lead_id, found in doomed}
    async with direct_db(store.uri, database) as db:
        before = await copies_in_store(db, [v for vs in values.values() for v in vs])
    assert {"leads", "events", "idempotency_keys"} <= collections_of(before)

    # The first deletions are acknowledged; the rest race other writes and the kill.
    acknowledged = []
    for lead_id, _ in doomed[:3]:
        status, _ = await call(
            http, "DELETE", base + tenant.lead_path(lead_id) + "?confirm=true", tenant
        )
        assert status == 200
        acknowledged.append(lead_id)

    async def delete(lead_id: str) -> int | None:
        url = base + tenant.lead_path(lead_id) + "?confirm=true"
        status, _ = await call(http, "DELETE", url, tenant)
        return status

    async def other(n: int) -> int | None:
        url = base + tenant.leads_path + ("?upsert=email" if n % 2 else "")
        status, _ = await call(http, "POST", url, tenant, json=person())
        return status

    racing = [asyncio.create_task(delete(lead_id)) for lead_id, _ in doomed[3:]]
    others = [asyncio.create_task(other(n)) for n in range(OTHER_WRITES)]
    # Killed as soon as one of them is answered: the others are in flight, some of them
    # committed and not yet answered.
    await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
    server.kill()  # SIGKILL: no handler runs, nothing is flushed
    statuses = await asyncio.gather(*racing)
    await asyncio.gather(*others)
    acknowledged += [
        lead_id for (lead_id, _), s in zip(doomed[3:], statuses, strict=True) if s == 200
    ]
    store.kill()
    store.start()
    server.start()

    async with direct_db(store.uri, database) as db:
        left = await copies_in_store(db, [v for lead_id in acknowledged for v in values[lead_id]])
        assert left == []
        # Each deletion committed whole or not at all: a lead is gone with every copy,
        # or whole (its deletion died before its commit).
        for lead_id, _ in doomed:
            present = await db["leads"].count_documents({"_id": lead_id})
            copies = await copies_in_store(db, values[lead_id])
            assert (present == 1) == bool(copies), (lead_id, copies)
            assert lead_id not in acknowledged or not present

    async with ClientSession() as fresh:  # the old connections died with the server
        for lead_id, _ in doomed:
            url = server.base_url + tenant.lead_path(lead_id) + "?confirm=true"
            status, _ = await call(fresh, "DELETE", url, tenant)
            assert status in (200, 404)
    async with direct_db(store.uri, database) as db:
        assert await copies_in_store(db, [v for vs in values.values() for v in vs]) == []


ERASED = 120  # five of the erasure's transactions (up to 25 leads each)


async def test_an_erasure_cut_by_a_sigkill_leaves_whole_leads_and_its_retry_the_rest(
    store: Store, database: str, tenant: Tenant, server: ApiServer, http: ClientSession
):
    base = server.base_url
    email = person()["email"]
    names = []
    for start in range(0, ERASED, 100):
        items = [person(email=email) for _ in range(min(100, ERASED - start))]
        names += [item["name"] for item in items]
        status, _ = await call(
            http, "POST", base + tenant.leads_path + "/batch", tenant, json={"leads": items}
        )
        assert status == 200
    body = {"email": email, "suppress": True, "confirm": True}
    erasure = asyncio.create_task(
        call(http, "POST", base + "/api/v1/privacy/erasures", tenant, json=body)
    )
    async with direct_db(store.uri, database) as db:
        # Killed once its first transaction has committed: the others are to come.
        mine = {"chatbotId": tenant.chatbot_id, "emailFolded": email}  # an index's read
        while await db["leads"].count_documents(mine) == ERASED:
            assert not erasure.done(), await erasure
            await asyncio.sleep(0.02)
    server.kill()
    status, _ = await erasure
    assert status is None or status == 200  # most often cut before its answer
    server.start()

    async with direct_db(store.uri, database) as db:
        left = [doc["name"] async for doc in db["leads"].find(mine)]
        assert len(left) < ERASED and (status is None or not left)
        # An erased lead left nothing; a lead not reached is whole.
        gone = [name for name in names if name not in left]
        assert gone and await copies_in_store(db, gone) == []
        assert await db["suppressions"].count_documents({}) == 1  # committed first
    async with ClientSession() as fresh:
        status, created = await call(
            fresh, "POST", server.base_url + tenant.leads_path, tenant, json=person(email=email)
        )
        assert status == 422 and created["error"]["code"] == "SUPPRESSED"
        status, done = await call(
            fresh, "POST", server.base_url + "/api/v1/privacy/erasures", tenant, json=body
        )
        assert status == 200 and done["data"]["erased"] == len(left), done
    async with direct_db(store.uri, database) as db:
        assert await copies_in_store(db, [*names, email]) == []
