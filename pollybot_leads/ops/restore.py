"""``pollybot-leads admin restore --from DIR [--force]``: a dump loaded into a database.

In order, and nothing is written before the first two have passed:

1. the manifest is read, and every file it lists is checked against it (there, with its
   SHA-256 and its number of documents): a missing file or a changed byte refuses the
   dump;
2. the database must be empty: no document in any collection (``--force``: its
   collections are dropped, so that it ends as the dump was; without it, the empty
   ones are, with the indexes a server may have made in them);
3. the indexes the features declare are created (``ensure_all_indexes``), but for the
   expiry (TTL) ones; then the documents are loaded, collection by collection, in
   batches (the embedded store builds an index over a full collection far slower than it
   keeps one up to date as documents come: docs/operations.md has the figures);
4. each collection's count is checked against the manifest;
5. the expiry indexes are created: only now, so that the store does not remove
   documents (an idempotency record of a dump a day old) while they are counted. From
   then on it expires what is due, as it would have at the source.

Stop the API servers and workers that use the database before a restore. A restore cut
off half way (a lost connection) leaves part of the dump: run it again with ``--force``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..errors import AppError
from ..indexes import ensure_all_indexes
from ..settings import Settings
from ..store.client import Mongo
from ..store.extjson import decode
from .dump import NOT_DUMPED, dumped_collections
from .dumpfiles import Entry, Progress, read_manifest, verify

WRITE_BATCH = 1000


class TargetNotEmpty(AppError):
    status, code = 409, "TARGET_NOT_EMPTY"


class RestoreFailed(AppError):
    status, code = 500, "RESTORE_FAILED"


async def restore(
    mongo: Mongo,
    source: Path,
    *,
    force: bool,
    progress: Progress,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Load the dump in ``source``; its summary. ``settings``: the retention the expiry
    indexes enforce (the defaults without)."""
    began = time.monotonic()
    manifest, entries = read_manifest(source)
    for entry in entries:
        verify(entry, progress)
    progress.done(f"verified {len(entries)} files against the manifest")

    holding = await _holding_documents(mongo)
    if holding and not force:
        raise TargetNotEmpty(
            f"database {mongo.db.name} is not empty ({', '.join(holding)} hold documents): "
            "restore into an empty database, or replace its contents with --force"
        )
    for name in await dumped_collections(mongo):
        await mongo.db.drop_collection(name)

    await ensure_all_indexes(mongo, settings, expiring=False)
    for entry in entries:
        await _load(mongo, entry, progress)
    counts = {name: await mongo.db[name].count_documents({}) for name in _names(entries)}
    wrong = {e.collection: (counts[e.collection], e.count) for e in entries}
    wrong = {name: pair for name, pair in wrong.items() if pair[0] != pair[1]}
    if wrong:
        found = ", ".join(f"{name} {held} of {want}" for name, (held, want) in wrong.items())
        raise RestoreFailed(f"documents in the database differ from the manifest: {found}")
    await ensure_all_indexes(mongo, settings)
    return {
        "restored": str(source),
        "database": mongo.db.name,
        "takenAt": manifest.get("takenAt"),
        "replaced": holding,
        "documents": sum(counts.values()),
        "collections": counts,
        "seconds": round(time.monotonic() - began, 2),
    }


def _names(entries: list[Entry]) -> list[str]:
    return [entry.collection for entry in entries]


async def _holding_documents(mongo: Mongo) -> list[str]:
    """The database's collections that hold a document (bar NOT_DUMPED)."""
    holding = []
    for name in await dumped_collections(mongo):
        if name not in NOT_DUMPED and await mongo.db[name].find_one({}, {"_id": 1}) is not None:
            holding.append(name)
    return holding


async def _load(mongo: Mongo, entry: Entry, progress: Progress) -> None:
    collection = mongo.db[entry.collection]
    batch: list[dict[str, Any]] = []
    done = 0
    with entry.path.open("rb") as file:
        for number, line in enumerate(file, 1):
            try:
                batch.append(decode(line))
            except ValueError as exc:  # the checksum matched: not a dump this reads
                raise RestoreFailed(
                    f"{entry.path.name} line {number} is not Extended JSON ({exc}); "
                    f"{done} documents of {entry.collection} were loaded: restore again "
                    "with --force after fixing the dump"
                ) from None
            if len(batch) == WRITE_BATCH:
                await collection.insert_many(batch)
                done += len(batch)
                batch = []
                progress.show(f"loading {entry.collection}", done, entry.count)
    if batch:
        await collection.insert_many(batch)
        done += len(batch)
    progress.done(f"{entry.collection}: {done:,}")
