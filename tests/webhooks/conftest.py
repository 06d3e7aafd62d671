"""Deliveries against real receivers: a worker per test, fast retries, short timeouts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from pollybot_leads import ids
from pollybot_leads.leads.event_log import LEAD_CREATED, EventLog
from pollybot_leads.store.client import Mongo
from pollybot_leads.timeutil import utcnow
from pollybot_leads.webhooks.delivery import DeliveryConfig, WebhookWorker
from pollybot_leads.webhooks.repository import WebhookRepository
from pollybot_leads.webhooks.retry import RetryPolicy
from tests.conftest import Tenant, own_database

from .receiver import Receiver

FAST = DeliveryConfig(
    allow_private=True,  # the receivers listen on 127.0.0.1
    timeout_seconds=0.5,
    concurrency=8,
    poll_seconds=0.02,
    policy=RetryPolicy(schedule=(0.05, 0.1, 0.2), retry_for_seconds=30),
)


# A database of these tests' own: the rest of the session writes thousands of events
# with no dispatcher running (delivery is off in the test configuration), and a
# dispatcher here would first have to work through all of them (on SecantusDB each read
# of pending events examines every one).
settings, mongo, accounts, api = own_database("webhooks", scope="package")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = await Receiver().start()
    yield receiver
    await receiver.stop()


@pytest.fixture
def webhooks(mongo: Mongo) -> WebhookRepository:
    return WebhookRepository(mongo)


@pytest.fixture
async def run_worker(mongo: Mongo) -> AsyncIterator[Callable[..., WebhookWorker]]:
    """Start workers in the background (``run_worker(config)``); all stop at the end."""
    running: list[tuple[WebhookWorker, asyncio.Task[None]]] = []

    def start(config: DeliveryConfig = FAST) -> WebhookWorker:
        worker = WebhookWorker(mongo, config)
        running.append((worker, asyncio.create_task(worker.run())))
        return worker

    yield start
    for worker, task in running:
        worker.stop()
        task.cancel()
    done, pending = await asyncio.wait([task for _, task in running], timeout=10)
    assert not pending, "a worker did not stop within 10 s"
    for task in done:
        with contextlib.suppress(asyncio.CancelledError):
            task.result()


def a_lead(tenant: Tenant, **fields: Any) -> dict[str, Any]:
    now = utcnow()
    return {
        "id": ids.new_id(ids.LEAD),
        "chatbotId": tenant.chatbot_id,
        "workspaceId": tenant.workspace_id,
        "name": "John Doe",
        "email": "john.doe@example.com",
        "phone": None,
        "source": None,
        "status": "new",
        "metadata": {},
        "statusHistory": [{"status": "new", "changedAt": now}],
        "createdAt": now,
        "updatedAt": now,
        **fields,
    }


async def emit(
    mongo: Mongo, tenant: Tenant, kind: str = LEAD_CREATED, data: dict | None = None, n: int = 1
) -> list[dict[str, Any]]:
    """Events appended as a lead write appends them: in a transaction of their own."""
    log = EventLog(mongo.db, mongo.quirks)
    events = [(kind, data or {"lead": a_lead(tenant)}) for _ in range(n)]
    return await mongo.transaction(
        lambda session: log.append(
            session, tenant.chatbot_id, tenant.workspace_id, events, utcnow()
        )
    )
