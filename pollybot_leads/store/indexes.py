"""Creating the indexes each feature declares, idempotently, at start-up.

A feature names its indexes beside its queries (``{collection: [IndexModel, ...]}``)
and the indexes an earlier version created that it no longer reads
(``{collection: (name, ...)}``); the store's own (transaction sessions) come with
every call.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from pymongo import ASCENDING, IndexModel
from pymongo.errors import OperationFailure

from .client import Mongo

log = logging.getLogger(__name__)

Indexes = Mapping[str, Sequence[IndexModel]]
Retired = Mapping[str, Sequence[str]]

# Transaction sessions of running processes (store/sessions.py); a record that no
# process reaped (all of them stopped) goes after a day.
STORE_INDEXES: Indexes = {
    "server_sessions": [
        IndexModel([("aliveAt", ASCENDING)], name="expiry", expireAfterSeconds=86_400)
    ],
}
INDEX_CONFLICTS = (85, 86)  # IndexOptionsConflict, IndexKeySpecsConflict
INDEX_ABSENT = (26, 27)  # NamespaceNotFound, IndexNotFound


async def ensure_indexes(mongo: Mongo, *wanted: Indexes, retired: Sequence[Retired] = ()) -> None:
    """Create every index; one whose definition changed under the same name is rebuilt,
    and a retired one (each costs every write to its collection) is dropped."""
    for indexes in (STORE_INDEXES, *wanted):
        for collection, models in indexes.items():
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
    for names_by_collection in retired:
        for collection, names in names_by_collection.items():
            for name in names:
                try:
                    await mongo.db[collection].drop_index(name)
                except OperationFailure as exc:
                    if exc.code not in INDEX_ABSENT:
                        raise
                else:
                    log.warning("dropped the retired index %s.%s", collection, name)
    log.debug("indexes ensured")
