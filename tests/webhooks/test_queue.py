"""The delivery queue at the store: fan-out is idempotent, targets are checked at send."""

from __future__ import annotations

import asyncio
import dataclasses

from pollybot_leads.storage.deliveries import DeliveryQueue
from tests.conftest import make_tenant

from .conftest import FAST, emit
from .receiver import Receiver


async def test_fanning_out_again_after_a_crash_makes_no_duplicates(mongo, accounts, webhooks):
    tenant = await make_tenant(accounts)
    for _ in range(2):
        await webhooks.create(
            workspace_id=tenant.workspace_id,
            url="https://example.com/hook",
            events=["lead.created"],
            chatbot_ids=[],
            description=None,
            enabled=False,  # nothing is sent: this test reads the queue
        )
    queue = DeliveryQueue(mongo)
    await webhooks.update(
        workspace_id=tenant.workspace_id,
        webhook_id=(await webhooks.list(workspace_id=tenant.workspace_id))[0]["id"],
        changes={"enabled": True},
    )
    events = await emit(mongo, tenant, n=3)
    ids = [e["_id"] for e in events]
    assert await queue.fan_out() == 3  # one endpoint is enabled
    # A crash after the deliveries were written, before the events lost `pending`:
    await mongo.db["events"].update_many({"_id": {"$in": ids}}, {"$set": {"pending": True}})
    # ...and two dispatchers redo it at once.
    made = await asyncio.gather(queue.fan_out(), queue.fan_out())
    assert sum(made) == 0
    stored = await mongo.db["webhook_deliveries"].count_documents({"eventId": {"$in": ids}})
    assert stored == 3
    assert await mongo.db["events"].count_documents({"_id": {"$in": ids}, "pending": True}) == 0


async def test_private_targets_are_refused_when_sending(mongo, accounts, webhooks, run_worker):
    """Stored before the rule applied (or resolving differently now): checked at send."""
    tenant = await make_tenant(accounts)
    receiver = await Receiver().start()
    try:
        made = []
        for url in (receiver.url, receiver.url.replace("127.0.0.1", "localhost")):
            endpoint, _ = await webhooks.create(
                workspace_id=tenant.workspace_id,
                url=url,
                events=["lead.created"],
                chatbot_ids=[],
                description=None,
            )
            made.append(endpoint["id"])
        await emit(mongo, tenant)
        run_worker(dataclasses.replace(FAST, allow_private=False))
        attempts = mongo.db["webhook_attempts"]
        for _ in range(200):
            if await attempts.count_documents({"webhookId": {"$in": made}}) >= 2:
                break
            await asyncio.sleep(0.02)
        errors = {
            doc["webhookId"]: doc["error"]
            async for doc in attempts.find({"webhookId": {"$in": made}})
        }
        assert "127.0.0.1 is a loopback address" in errors[made[0]]
        assert "localhost resolves to a refused address" in errors[made[1]]
        assert receiver.received == []
    finally:
        await receiver.stop()
