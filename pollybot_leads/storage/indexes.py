"""Every index the service's queries need, created idempotently at start-up."""

from __future__ import annotations

import logging

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.errors import OperationFailure

from ..domain.queries import SORTS, LeadQuery
from .client import Mongo

log = logging.getLogger(__name__)


def _sorted_by(name: str, prefix: list[tuple[str, int]], field: str) -> IndexModel:
    return IndexModel(prefix + [(field, DESCENDING), ("_id", DESCENDING)], name=name)


# One index per sort (so every filter on top of it is still an index scan) and one per
# selective filter, each ending in the default sort so the common case never sorts in
# memory. Names are stable: queries hint them, tests explain them.
LEAD_INDEXES = [
    _sorted_by("by_created", [("chatbotId", ASCENDING)], "createdAt"),
    _sorted_by("by_updated", [("chatbotId", ASCENDING)], "updatedAt"),
    IndexModel(
        [("chatbotId", ASCENDING), ("nameSort", ASCENDING), ("_id", ASCENDING)], name="by_name"
    ),
    _sorted_by("by_status", [("chatbotId", ASCENDING), ("status", ASCENDING)], "createdAt"),
    _sorted_by("by_source", [("chatbotId", ASCENDING), ("source", ASCENDING)], "createdAt"),
    _sorted_by("by_email", [("chatbotId", ASCENDING), ("emailFolded", ASCENDING)], "createdAt"),
    _sorted_by(
        "by_search", [("chatbotId", ASCENDING), ("searchTerms", ASCENDING)], "createdAt"
    ),
]
SORT_INDEX = {"createdAt": "by_created", "updatedAt": "by_updated", "nameSort": "by_name"}

OTHER_INDEXES = {
    "api_keys": [
        IndexModel([("digest", ASCENDING)], name="by_digest", unique=True),
        IndexModel([("workspaceId", ASCENDING), ("createdAt", ASCENDING)], name="by_workspace"),
    ],
    "chatbots": [IndexModel([("workspaceId", ASCENDING)], name="by_workspace")],
    "audit_log": [
        IndexModel([("leadId", ASCENDING)], name="by_lead"),
        IndexModel([("chatbotId", ASCENDING), ("at", DESCENDING)], name="by_chatbot"),
    ],
}


def choose_lead_index(query: LeadQuery) -> str:
    """The index a list query runs on: the most selective filter, else its sort.

    Chosen here rather than left to the planner so that every engine behind the driver
    answers every query shape from an index (tests explain each shape).
    """
    field, _ = SORTS[query.sort]
    default_sort = field == "createdAt"
    if query.words:
        return "by_search"
    if query.email is not None:
        return "by_email"
    if default_sort and query.statuses:
        return "by_status"
    if default_sort and query.sources:
        return "by_source"
    return SORT_INDEX[field]


INDEX_CONFLICTS = (85, 86)  # IndexOptionsConflict, IndexKeySpecsConflict


async def ensure_indexes(mongo: Mongo) -> None:
    """Create every index; one whose definition changed under the same name is rebuilt."""
    for collection, models in {"leads": LEAD_INDEXES, **OTHER_INDEXES}.items():
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
    log.debug("indexes ensured")
