"""Every index the service's queries need, created idempotently at start-up."""

from __future__ import annotations

import logging

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.errors import OperationFailure

from ..idempotency.records import RECORD_TTL_SECONDS
from ..leads.queries import SORTS, LeadQuery
from ..webhooks.repository import WEBHOOK_INDEXES
from .client import Mongo

log = logging.getLogger(__name__)

# Events are kept at least this long (the store's TTL monitor removes them after it).
EVENT_RETENTION_SECONDS = 30 * 24 * 3600
# An upsert guard only matters while upserts of its email are in flight.
UPSERT_GUARD_SECONDS = 3600


def _sorted_by(name: str, prefix: list[tuple[str, int]], field: str) -> IndexModel:
    return IndexModel([*prefix, (field, DESCENDING), ("_id", DESCENDING)], name=name)


# One index per sort (so every filter on top of it is still an index scan) and one per
# selective filter, each ending in the default sort so the common case never sorts in
# memory. Every one begins with chatbotId: a query that names the chatbot reads only
# its leads. Names are stable: tests explain them. No query hints an index.
LEAD_INDEXES = [
    _sorted_by("by_created", [("chatbotId", ASCENDING)], "createdAt"),
    _sorted_by("by_updated", [("chatbotId", ASCENDING)], "updatedAt"),
    IndexModel(
        [("chatbotId", ASCENDING), ("nameSort", ASCENDING), ("_id", ASCENDING)], name="by_name"
    ),
    _sorted_by("by_status", [("chatbotId", ASCENDING), ("status", ASCENDING)], "createdAt"),
    _sorted_by("by_source", [("chatbotId", ASCENDING), ("source", ASCENDING)], "createdAt"),
    # Status with source: on SecantusDB each (status, source) pair is one equality read
    # of this index in creation order (several of each merged), rather than every lead of
    # the statuses read and their source checked in the service.
    _sorted_by(
        "by_status_source",
        [("chatbotId", ASCENDING), ("status", ASCENDING), ("source", ASCENDING)],
        "createdAt",
    ),
    _sorted_by("by_email", [("chatbotId", ASCENDING), ("emailFolded", ASCENDING)], "createdAt"),
    _sorted_by("by_search", [("chatbotId", ASCENDING), ("searchPrefixes", ASCENDING)], "createdAt"),
    _sorted_by(
        "by_metadata", [("chatbotId", ASCENDING), ("metadataIndex", ASCENDING)], "createdAt"
    ),
]
# The fields each lead index holds, in order: a filter on these alone is answered by it.
INDEX_KEYS: dict[str, tuple[str, ...]] = {
    model.document["name"]: tuple(model.document["key"]) for model in LEAD_INDEXES
}
INDEX_FIELDS: dict[str, frozenset[str]] = {
    name: frozenset(keys) for name, keys in INDEX_KEYS.items()
}
SORT_INDEX = {"createdAt": "by_created", "updatedAt": "by_updated", "nameSort": "by_name"}

OTHER_INDEXES = {
    "api_keys": [
        IndexModel([("digest", ASCENDING)], name="by_digest", unique=True),
        IndexModel([("workspaceId", ASCENDING), ("createdAt", ASCENDING)], name="by_workspace"),
    ],
    "chatbots": [IndexModel([("workspaceId", ASCENDING)], name="by_workspace")],
    # The feed reads a chatbot's events by sequence; the store itself expires them.
    "events": [
        IndexModel(
            [("chatbotId", ASCENDING), ("sequence", ASCENDING)], name="by_sequence", unique=True
        ),
        IndexModel(
            [("createdAt", ASCENDING)], name="expiry", expireAfterSeconds=EVENT_RETENTION_SECONDS
        ),
        # The webhook dispatcher's work: sparse, so it holds only events not yet fanned
        # out, by their time (read a window at a time: webhooks/pending.py).
        IndexModel([("pending", ASCENDING)], name="pending", sparse=True),
    ],
    # Idempotency records and upsert guards are expired by the store itself.
    "idempotency_keys": [
        IndexModel(
            [("createdAt", ASCENDING)], name="expiry", expireAfterSeconds=RECORD_TTL_SECONDS
        ),
    ],
    "upsert_guards": [
        IndexModel([("at", ASCENDING)], name="expiry", expireAfterSeconds=UPSERT_GUARD_SECONDS),
    ],
    "audit_log": [
        IndexModel([("leadId", ASCENDING)], name="by_lead"),
        IndexModel([("chatbotId", ASCENDING), ("at", DESCENDING)], name="by_chatbot"),
    ],
    # Transaction sessions of running processes (store/sessions.py); a record that no
    # process reaped (all of them stopped) goes after a day.
    "server_sessions": [
        IndexModel([("aliveAt", ASCENDING)], name="expiry", expireAfterSeconds=86_400)
    ],
}


def choose_lead_index(query: LeadQuery) -> str:
    """The index a list query runs on: its most selective filter's, else its sort's."""
    if query.words:
        return "by_search"
    if query.email is not None:
        return "by_email"
    if query.metadata:
        return "by_metadata"
    if query.statuses and query.sources:
        return "by_status_source"
    if query.statuses:
        return "by_status"
    if query.sources:
        return "by_source"
    updated = query.updated_after is not None or query.updated_before is not None
    created = query.created_after is not None or query.created_before is not None
    if updated and not created:
        return "by_updated"
    return SORT_INDEX[SORTS[query.sort][0]]


def index_layout(name: str) -> tuple[tuple[str, ...], str]:
    """A lead index's fields between ``chatbotId`` and ``_id``: those it pins by equality
    (none for the sort indexes) and the last one, which it can read a range of."""
    inner = [k for k in INDEX_KEYS[name] if k not in ("chatbotId", "_id")]
    return tuple(inner[:-1]), inner[-1]


INDEX_CONFLICTS = (85, 86)  # IndexOptionsConflict, IndexKeySpecsConflict
INDEX_ABSENT = (26, 27)  # NamespaceNotFound, IndexNotFound
# Indexes an earlier version created and no query uses any more: dropped at start-up
# (each costs every write to its collection).
RETIRED_INDEXES = {
    "webhook_deliveries": ("due",)
}  # (state, dueAt): webhooks/due.py reads by_webhook


async def ensure_indexes(mongo: Mongo) -> None:
    """Create every index; one whose definition changed under the same name is rebuilt."""
    for collection, models in {"leads": LEAD_INDEXES, **OTHER_INDEXES, **WEBHOOK_INDEXES}.items():
        coll = mongo.db[collection]
        for model in models:
            try:
                await coll.create_indexes([model])
            except OperationFailure as exc:
                if exc.code not in INDEX_CONFLICTS:
                    raise
                name = model.document["name"]
                log.warning("index %s.%s changed definition: rebuilding it", collection, name)
                await coll.drop_index(name)
                await coll.create_indexes([model])
    for collection, names in RETIRED_INDEXES.items():
        for name in names:
            try:
                await mongo.db[collection].drop_index(name)
            except OperationFailure as exc:
                if exc.code not in INDEX_ABSENT:
                    raise
            else:
                log.warning("dropped the retired index %s.%s", collection, name)
    log.debug("indexes ensured")
