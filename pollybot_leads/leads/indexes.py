"""The lead collection's indexes, and which one a list query runs on."""

from __future__ import annotations

from ..store.driver import ASCENDING, DESCENDING, IndexModel
from .event_log import EVENT_INDEXES
from .queries import SORTS, LeadQuery

# An upsert guard only matters while upserts of its email are in flight. Guards are keyed
# by a hash of the email (leads/upsert_match.py, upsert_guard_id); those of releases that
# keyed them by the email itself are never written again and expire with this too, and
# while old and new processes run side by side, upserts of one chatbot still exclude each
# other: every write transaction of a chatbot moves its event sequence.
UPSERT_GUARD_SECONDS = 3600
# Audit records (lead deletions) are kept this long by default (retention.audit_days).
AUDIT_RETENTION_SECONDS = 365 * 24 * 3600
TOMBSTONE_RETENTION_SECONDS = 30 * 24 * 3600  # retention.merge_tombstones_days


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
    # Status with source: on an index-only store each (status, source) pair is one
    # equality read of this index in creation order (several of each merged), rather
    # than every lead of the statuses read and their source checked in the service.
    _sorted_by(
        "by_status_source",
        [("chatbotId", ASCENDING), ("status", ASCENDING), ("source", ASCENDING)],
        "createdAt",
    ),
    _sorted_by("by_email", [("chatbotId", ASCENDING), ("emailFolded", ASCENDING)], "createdAt"),
    # An erasure's and the phone filter's: the chatbot's leads with one phone
    # (leads/phones.py, phone_key).
    _sorted_by("by_phone", [("chatbotId", ASCENDING), ("phoneKey", ASCENDING)], "createdAt"),
    _sorted_by(
        "by_external_id", [("chatbotId", ASCENDING), ("externalId", ASCENDING)], "createdAt"
    ),
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

LEADS_INDEXES = {
    # The list indexes, and the one that keeps an external id unique within its chatbot
    # (sparse: only leads that have one hold ``externalKey``, documents.external_id).
    "leads": [
        *LEAD_INDEXES,
        IndexModel(
            [("externalKey", ASCENDING)], name="external_id_unique", unique=True, sparse=True
        ),
    ],
    **EVENT_INDEXES,
    # Upsert guards are expired by the store itself.
    "upsert_guards": [
        IndexModel([("at", ASCENDING)], name="expiry", expireAfterSeconds=UPSERT_GUARD_SECONDS),
    ],
    "audit_log": [
        IndexModel([("leadId", ASCENDING)], name="by_lead"),
        IndexModel([("chatbotId", ASCENDING), ("at", DESCENDING)], name="by_chatbot"),
        # The store itself expires them (retention.audit_days).
        IndexModel([("at", ASCENDING)], name="expiry", expireAfterSeconds=AUDIT_RETENTION_SECONDS),
    ],
    # A merged lead's id answers 404 LEAD_MERGED while its tombstone is kept.
    "merge_tombstones": [
        IndexModel([("chatbotId", ASCENDING)], name="by_chatbot"),
        IndexModel(
            [("at", ASCENDING)], name="expiry", expireAfterSeconds=TOMBSTONE_RETENTION_SECONDS
        ),
    ],
}


def choose_lead_index(query: LeadQuery) -> str:
    """The index a list query runs on: its most selective filter's, else its sort's."""
    if query.words:
        return "by_search"
    if query.external_id is not None:  # at most one lead
        return "by_external_id"
    if query.email is not None:
        return "by_email"
    if query.phone is not None:
        return "by_phone"
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
