"""Every feature's indexes, ensured together at start-up (serve, tests, benchmarks), with
the expiries that enforce the configured retention of each kind of kept record."""

from __future__ import annotations

from .accounts.repository import ACCOUNT_INDEXES
from .admin.audit import AUDIT_INDEXES
from .admin.deletion import DELETION_INDEXES
from .idempotency.records import IDEMPOTENCY_INDEXES
from .leads.indexes import LEADS_INDEXES
from .leads.suppressions import SUPPRESSION_INDEXES
from .settings import Settings
from .store.client import Mongo
from .store.indexes import EXPIRY, Expiries, Indexes, ensure_indexes
from .webhooks.repository import WEBHOOK_INDEXES, WEBHOOK_RETIRED_INDEXES

FEATURE_INDEXES: tuple[Indexes, ...] = (
    LEADS_INDEXES,
    ACCOUNT_INDEXES,
    IDEMPOTENCY_INDEXES,
    WEBHOOK_INDEXES,
    SUPPRESSION_INDEXES,
    AUDIT_INDEXES,
    DELETION_INDEXES,
)

# The expiry index (collection, name) that enforces each retention setting
# (Settings.retention_seconds; docs/privacy.md has the table).
RETENTION_INDEXES = {
    ("events", "expiry"): "events",
    ("webhook_deliveries", "expiry"): "delivery_logs",
    ("webhook_attempts", "expiry"): "delivery_logs",
    ("audit_log", "expiry"): "audit",
    ("idempotency_keys", "expiry"): "idempotency",
    ("merge_tombstones", "expiry"): "merge_tombstones",
}


def retention_expiries(settings: Settings) -> Expiries:
    """The expiry, in seconds, of each index that enforces a retention setting."""
    seconds = settings.retention_seconds
    return {index: seconds[kind] for index, kind in RETENTION_INDEXES.items()}


async def ensure_all_indexes(
    mongo: Mongo, settings: Settings | None = None, *, expiring: bool = True
) -> None:
    """Every index, expiries as ``settings`` say (the defaults without).

    ``expiring=False``: all but the expiry indexes, whose store removes what is past its
    time (a restore creates them once it has counted what it loaded)."""
    wanted = FEATURE_INDEXES if expiring else tuple(map(_lasting, FEATURE_INDEXES))
    await ensure_indexes(
        mongo,
        *wanted,
        retired=[WEBHOOK_RETIRED_INDEXES],
        expiries=retention_expiries(settings or Settings()),
    )


def _lasting(indexes: Indexes) -> Indexes:
    return {
        collection: [m for m in models if EXPIRY not in m.document]
        for collection, models in indexes.items()
    }
