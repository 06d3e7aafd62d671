"""A chatbot's lead documents as of one moment, for ``admin dump`` (ops/dump.py).

Each lead write commits the lead, the chatbot's counter shard, its event and its event
sequence in one transaction (leads/transaction.py). :func:`read_chatbot`, given a
session whose reads all see one snapshot (store/snapshots.py), reads exactly those four
collections of one chatbot, so in the dump its leads, counters and events agree:
the counters' total is its number of leads, and its last event is the sequence's
``last`` (a new write after a restore continues from it).

The reads are bounded, so that the API keeps being served while they run (a store
that holds one lock while it reads, as the embedded store does, would stall every request for
as long as one read of a whole chatbot's leads takes): leads in the windows of an
export (store/walks.py), events in windows of their sequence.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from ..errors import AppError
from ..store.quirks import StoreQuirks
from ..store.reads import Reads
from ..store.snapshots import SessionCollection
from .counters import shard_filter
from .export_reads import LeadExporter
from .queries import LeadQuery

# The collections of one chatbot that move together, in the order they are read.
CHATBOT_COLLECTIONS = ("event_sequences", "lead_counts", "leads", "events")
# Events per read at most: sequences are unique, so a window this wide holds no more.
EVENT_READ = 500
EVENT_WINDOW_MAX = 1 << 40
# Leads created up to here are read (an export stops a minute after now): a lead stamped
# ahead of the clock (another server's clock, a bulk load) is in the dump too. The walk
# reaches now from there in a few empty reads.
CEILING = datetime(9000, 1, 1, tzinfo=UTC)


class InconsistentRead(AppError):
    status, code = 500, "DUMP_INCONSISTENT"


async def chatbot_ids(db: Any) -> list[str]:
    """Every chatbot the store holds data of: its record, its event sequence or its
    counters (a lead is never written without the last two)."""
    found: set[str] = set()
    async for doc in db["chatbots"].find({}, {"_id": 1}):
        found.add(doc["_id"])
    async for doc in db["event_sequences"].find({}, {"_id": 1}):
        found.add(doc["_id"])
    async for doc in db["lead_counts"].find({}, {"chatbotId": 1}):
        if isinstance(doc.get("chatbotId"), str):
            found.add(doc["chatbotId"])
    return sorted(found)


async def read_chatbot(
    db: Any, session: Any, chatbot_id: str, quirks: StoreQuirks
) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """``(collection, documents)`` of the chatbot, in pages, all read in ``session``."""
    sequence = await db["event_sequences"].find_one({"_id": chatbot_id}, session=session)
    if sequence is not None:
        yield "event_sequences", [sequence]
    shards = await db["lead_counts"].find(shard_filter(chatbot_id), session=session).to_list(None)
    yield "lead_counts", shards

    leads = SessionCollection(db["leads"], session)
    read = 0
    exporter = LeadExporter(leads, {}, quirks=quirks)  # {}: whole documents
    every = LeadQuery(sort="-createdAt", created_before=CEILING)
    async for page in exporter.pages(chatbot_id, every):
        if page:
            read += len(page)
            yield "leads", page
    total = sum(shard.get("total", 0) for shard in shards)
    if read != total:
        # The counters disagree (a bulk load not recounted?), or the walk missed a lead
        # (one whose creation time is not a date): count them.
        held = await Reads(leads).count({"chatbotId": chatbot_id})
        if held != read:
            raise InconsistentRead(
                f"chatbot {chatbot_id}: read {read} leads of the {held} it holds"
            )

    last = sequence.get("last", 0) if sequence is not None else 0
    async for page in _events(db, session, chatbot_id, last):
        yield "events", page


async def _events(
    db: Any, session: Any, chatbot_id: str, last: int
) -> AsyncIterator[list[dict[str, Any]]]:
    """The chatbot's events up to sequence ``last``, in order, a window of sequences at
    a time (wider while they are sparse: the oldest have expired)."""
    events = db["events"]
    low, width = 0, EVENT_READ
    while low < last:
        high = min(low + width, last)
        cursor = events.find(
            {"chatbotId": chatbot_id, "sequence": {"$gt": low, "$lte": high}},
            sort=[("sequence", 1)],
            session=session,
        )
        page: list[dict[str, Any]] = await cursor.to_list(None)
        if page:
            yield page
        low = high
        if len(page) < EVENT_READ // 2:
            width = min(width * 8 if not page else width * 2, EVENT_WINDOW_MAX)
        elif len(page) > EVENT_READ:
            width = max(EVENT_READ, width * EVENT_READ // len(page))
    beyond = await events.find_one(
        {"chatbotId": chatbot_id, "sequence": {"$gt": last}}, session=session
    )
    if beyond is not None:
        raise InconsistentRead(
            f"chatbot {chatbot_id}: event {beyond['sequence']} is past its sequence {last}"
        )
