"""Creating the indexes each feature declares, idempotently, at start-up.

A feature names its indexes beside its queries (``{collection: [IndexModel, ...]}``)
and the indexes an earlier version created that it no longer reads
(``{collection: (name, ...)}``); the store's own (transaction sessions) come with
every call. ``expiries`` (``{(collection, index name): seconds}``) sets the expiry of
the expiry indexes that enforce a configured retention.

An index whose definition changed under the same name is rebuilt (dropped and created:
on a large collection, a full build). One whose expiry alone changed is changed in place
(``collMod``, as on MongoDB and the embedded store): no rebuild, and the store's
expiry of the collection never stops.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.errors import OperationFailure

from .client import Mongo

log = logging.getLogger(__name__)

Indexes = Mapping[str, Sequence[IndexModel]]
Retired = Mapping[str, Sequence[str]]
Expiries = Mapping[tuple[str, str], int]
EXPIRY = "expireAfterSeconds"
# Options a server reports of an index beside those it was created with.
_REPORTED = frozenset({"v", "ns", "key", "name", EXPIRY})

# Transaction sessions of running processes (store/sessions.py); a record that no
# process reaped (all of them stopped) goes after a day.
STORE_INDEXES: Indexes = {
    "server_sessions": [
        IndexModel([("aliveAt", ASCENDING)], name="expiry", expireAfterSeconds=86_400)
    ],
}
INDEX_CONFLICTS = (85, 86)  # IndexOptionsConflict, IndexKeySpecsConflict
INDEX_ABSENT = (26, 27)  # NamespaceNotFound, IndexNotFound


def with_expiry(model: IndexModel, seconds: int) -> IndexModel:
    """``model`` (an expiry index) with its expiry set to ``seconds``."""
    doc = dict(model.document)
    if EXPIRY not in doc:
        raise ValueError(f"index {doc['name']} has no expiry to set")
    keys = list(doc.pop("key").items())
    return IndexModel(keys, **{**doc, EXPIRY: seconds})


async def ensure_indexes(
    mongo: Mongo,
    *wanted: Indexes,
    retired: Sequence[Retired] = (),
    expiries: Expiries | None = None,
) -> None:
    """Create every index, with its expiry from ``expiries`` where it names one; an index
    whose definition changed under the same name is rebuilt, one whose expiry alone
    changed is changed in place, and a retired one (each costs every write to its
    collection) is dropped."""
    expiries = expiries or {}
    for indexes in (STORE_INDEXES, *wanted):
        for collection, models in indexes.items():
            coll = mongo.db[collection]
            for model in models:
                name = model.document["name"]
                if (collection, name) in expiries:
                    model = with_expiry(model, expiries[collection, name])
                try:
                    await coll.create_indexes([model])
                except OperationFailure as exc:
                    if exc.code not in INDEX_CONFLICTS:
                        raise
                    if await _expiry_alone_changed(coll, model):
                        seconds = model.document[EXPIRY]
                        await mongo.db.command(
                            "collMod", collection, index={"name": name, EXPIRY: seconds}
                        )
                        log.warning("index %s.%s: expiry now %d s", collection, name, seconds)
                        continue
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


async def _expiry_alone_changed(coll: Any, model: IndexModel) -> bool:
    """Whether the index of ``model``'s name differs from it in its expiry alone."""
    wanted = model.document
    found = (await coll.index_information()).get(wanted["name"])
    if found is None or EXPIRY not in found or EXPIRY not in wanted:
        return False
    same_keys = [tuple(k) for k in found["key"]] == list(wanted["key"].items())
    options = (set(found) | set(wanted)) - _REPORTED
    return same_keys and all(found.get(o) == wanted.get(o) for o in options)
