"""Every feature's indexes, ensured together at start-up (serve, tests, benchmarks)."""

from __future__ import annotations

from .accounts.repository import ACCOUNT_INDEXES
from .idempotency.records import IDEMPOTENCY_INDEXES
from .leads.indexes import LEADS_INDEXES
from .store.client import Mongo
from .store.indexes import ensure_indexes
from .webhooks.repository import WEBHOOK_INDEXES, WEBHOOK_RETIRED_INDEXES


async def ensure_all_indexes(mongo: Mongo) -> None:
    await ensure_indexes(
        mongo,
        LEADS_INDEXES,
        ACCOUNT_INDEXES,
        IDEMPOTENCY_INDEXES,
        WEBHOOK_INDEXES,
        retired=[WEBHOOK_RETIRED_INDEXES],
    )
