"""``pollybot-leads admin dump --out DIR``: a consistent copy of the whole database,
taken while the API serves.

**Consistent per chatbot.** A lead write commits the lead, the chatbot's counters, its
event and its event sequence in one transaction. The dump reads those four collections
of one chatbot in one snapshot (a read-only transaction, store/snapshots.py), so in
the dump each chatbot's leads, counters and events agree whatever was written during
it. Each chatbot gets a snapshot of its own, not one for the whole database: a
snapshot held for the whole dump would have to outlive mongod's transaction lifetime
(60 s) on a large database, and on the embedded store the history a snapshot pins makes every
write dearer while it lasts (docs/load.md). A chatbot created after the dump began may
be missing from it, and the other collections (workspaces, keys, webhooks, their
queue and logs, idempotency records) are each read as they are when their turn comes.

**Bounded reads.** Leads and events are read a window at a time (leads/dump_reads.py),
so a dump does not hold the store for the whole of a chatbot's leads.

Not dumped: ``server_sessions`` (the transaction sessions of the processes running
now, store/sessions.py: meaningless to another store). Indexes are not dumped either: a
restore creates the ones the features declare.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import AppError
from ..leads.dump_reads import CHATBOT_COLLECTIONS, chatbot_ids, read_chatbot
from ..store.client import Mongo
from ..store.snapshots import in_snapshot
from ..timeutil import format_ts, utcnow
from .dumpfiles import (
    COLLECTION_NAME,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    CollectionFile,
    Progress,
    fsync_dir,
    private_dir,
)

# Collections never dumped (nor touched by a restore).
NOT_DUMPED = frozenset({"server_sessions"})
READ_BATCH = 1000


class DumpFailed(AppError):
    status, code = 500, "DUMP_FAILED"


async def dumped_collections(mongo: Mongo) -> list[str]:
    names: list[str] = await mongo.db.list_collection_names()
    return sorted(n for n in names if n not in NOT_DUMPED and not n.startswith("system."))


async def dump(mongo: Mongo, out: Path, progress: Progress) -> dict[str, Any]:
    """Write the dump to ``out`` (which must not exist); its summary."""
    began, taken_at = time.monotonic(), utcnow()
    partial = out.parent / f".{out.name}.partial-{secrets.token_hex(4)}"
    private_dir(partial)
    files: dict[str, CollectionFile] = {}
    try:
        collections = await dumped_collections(mongo)
        odd = [name for name in collections if not COLLECTION_NAME.match(name)]
        if odd:  # not one of the service's: it could not be named as a file
            raise DumpFailed(f"collections whose names a dump cannot hold: {odd}")
        for name in (*CHATBOT_COLLECTIONS, *collections):
            if name not in files:
                files[name] = CollectionFile(partial, name)
        chatbots = await chatbot_ids(mongo.db)
        await _dump_chatbots(mongo, chatbots, files, progress)
        for name in collections:
            if name not in CHATBOT_COLLECTIONS:
                await _dump_whole(mongo, name, files[name], progress)
        entries = {name: file.close() for name, file in sorted(files.items())}
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "takenAt": format_ts(taken_at),
            "database": mongo.db.name,
            "server": mongo.quirks.server,
            "pollybotLeads": __version__,
            "chatbots": len(chatbots),
            "collections": entries,
        }
        _write_manifest(partial, manifest)
        os.rename(partial, out)  # the dump appears whole, or not at all
        fsync_dir(out.parent)
    except BaseException:
        for file in files.values():
            file.discard()
        shutil.rmtree(partial, ignore_errors=True)
        raise
    counts = {name: entry["count"] for name, entry in entries.items()}
    return {
        "dumped": str(out),
        "database": mongo.db.name,
        "takenAt": manifest["takenAt"],
        "chatbots": len(chatbots),
        "documents": sum(counts.values()),
        "collections": counts,
        "bytes": sum((out / entry["file"]).stat().st_size for entry in entries.values()),
        "seconds": round(time.monotonic() - began, 2),
    }


async def _dump_chatbots(
    mongo: Mongo, chatbots: list[str], files: dict[str, CollectionFile], progress: Progress
) -> None:
    leads_total = await mongo.db["leads"].estimated_document_count()
    for number, chatbot_id in enumerate(chatbots, 1):
        label = f"chatbot {number} of {len(chatbots)}: leads"

        def shown(label: str = label) -> None:
            progress.show(label, files["leads"].count, leads_total)

        await in_snapshot(mongo, ChatbotDump(mongo, chatbot_id, files, shown))
    progress.done(f"{len(chatbots):,} chatbots: {files['leads'].count:,} leads")


class ChatbotDump:
    """One chatbot's documents, read in one snapshot and appended to their files; run
    again (a new snapshot), it first takes back what an earlier attempt wrote."""

    def __init__(
        self,
        mongo: Mongo,
        chatbot_id: str,
        files: dict[str, CollectionFile],
        on_page: Callable[[], None],
    ) -> None:
        self._mongo, self._chatbot_id, self._files = mongo, chatbot_id, files
        self._on_page = on_page
        self._marks = {name: files[name].mark() for name in CHATBOT_COLLECTIONS}

    async def __call__(self, session: Any) -> None:
        for name, mark in self._marks.items():
            self._files[name].rewind(mark)
        mongo = self._mongo
        async for collection, docs in read_chatbot(
            mongo.db, session, self._chatbot_id, mongo.quirks
        ):
            self._files[collection].write(docs)
            self._on_page()


async def _dump_whole(mongo: Mongo, name: str, file: CollectionFile, progress: Progress) -> None:
    collection = mongo.db[name]
    total = await collection.estimated_document_count()
    batch: list[dict[str, Any]] = []
    async for doc in collection.find({}, batch_size=READ_BATCH):
        batch.append(doc)
        if len(batch) == READ_BATCH:
            file.write(batch)
            batch = []
            progress.show(name, file.count, total)
    file.write(batch)
    progress.done(f"{name}: {file.count:,}")


def _write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    path = directory / MANIFEST
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        file.flush()
        os.fsync(file.fileno())
    fsync_dir(directory)
