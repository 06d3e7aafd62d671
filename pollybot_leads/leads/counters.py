"""A chatbot's lead counters (total and by status), so an unfiltered list never counts.

Counters move inside the transaction of the lead write that changes them, so they are
exact whatever crashes when. One counter document per chatbot would make every create
of that chatbot conflict with every other one in flight (docs/stores.md has the
figures); so each chatbot's counts are spread over ``SHARDS`` documents,
``<chatbotId>:<nn>``, summed on read (one ``_id`` range read), and this process hands
each write a shard that no other write of its own is using.

Beside the counts, each shard keeps bounds of the chatbot's leads, moved by the same
writes: ``firstAt``, no later than any lead's creation (and so update) time, and
``nameLow``/``nameHigh``, below and above every folded name any write gave a lead.
Deletes and renames leave them where they were, so they only ever bound the leads
(never exactly); list windows start from them (leads/listing.py, store/plans.py), and
a stale bound costs those reads a little, never their result.

A name bound outlives the lead that set it (a deletion cannot tell which lead set it,
nor a rename the names before it), so it is never a name: only the first character of
the class of the name's first character (store/positions.py, ``class_floor``) below it,
and the next class's above it: "Secret Person" is kept as "s" and "t". A window's
position starts from the class either way; the few empty keys between the class's
first character and the chatbot's first name cost a read of the index, no documents.
Shards written before that are made coarse once (``coarsen_name_bounds``).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..store.positions import class_ceiling, class_floor
from ..timeutil import utcnow
from .rules import STATUSES

SHARDS = 32
BY_SOURCE = "bySource"
# On every shard whose ``bySource`` counts every lead its ``total`` does: shards made
# since those counts exist and by recount. Until all of a chatbot's shards have it
# (after ``admin recount``), its lists filtered by source count their leads instead.
SOURCES_COUNTED = "sourcesCounted"
# The sources a shard counts, as a list beside ``bySource`` (a query can measure a list,
# not a document's fields). Sources are free text: a shard stops counting by source
# past SOURCES_KEPT of them (it is marked not counted: the chatbot's lists filtered by
# source count their leads), so no client can grow a shard towards the store's 16 MiB
# document limit, nor the counter read every list makes.
SOURCE_KEYS = "sourceKeys"
SOURCES_KEPT = 500
# The marker, in ``migrations``, of a database whose name bounds are all coarse.
COARSE_NAMES = "lead_counts.coarse_name_bounds"


def _range(chatbot_id: str) -> dict[str, Any]:
    # Chatbot ids have a fixed length, so "<id>:" .. "<id>;" holds exactly its shards.
    return {"_id": {"$gte": f"{chatbot_id}:", "$lt": f"{chatbot_id};"}}


def shard_filter(chatbot_id: str) -> dict[str, Any]:
    """The filter of the chatbot's counter shards (for readers outside this module)."""
    return _range(chatbot_id)


def pair_key(status: str, source: Any) -> str | None:
    """The counter of the leads with this status and source (None: no source, not
    counted): ``bySource.<source as UTF-8 hex>.<status>`` (a source may hold any
    character, a field name may not)."""
    if not isinstance(source, str):
        return None
    return f"{BY_SOURCE}.{source.encode().hex()}.{status}"


def _inc(changes: dict[str, int]) -> dict[str, int]:
    inc = {
        (s if s.startswith(BY_SOURCE) else f"byStatus.{s}"): n
        for s, n in changes.items()
        if s != "total"
    }
    if "total" in changes:
        inc["total"] = changes["total"]
    return inc


class Claim:
    """The counter shards one write uses: a new one on every attempt of its transaction.

    A retried transaction conflicted, perhaps on its shard (held by a transaction still
    open, e.g. of a server killed mid-write, until the store reaps it after 60 s), so
    each attempt takes a shard the earlier attempts did not use.
    """

    def __init__(self, counters: LeadCounters, chatbot_id: str) -> None:
        self._counters, self._chatbot_id = counters, chatbot_id
        self.used: list[int] = []

    async def add(
        self, session: Any, changes: dict[str, int], bounds: Bounds | None = None
    ) -> None:
        number = self._counters.take(self._chatbot_id, avoid=self.used)
        self.used.append(number)
        shard = f"{self._chatbot_id}:{number:02d}"
        pairs = {k: n for k, n in changes.items() if k.startswith(BY_SOURCE)}
        plain = {k: n for k, n in changes.items() if k not in pairs}
        update: dict[str, Any] = {
            "$setOnInsert": {"chatbotId": self._chatbot_id, SOURCES_COUNTED: True}
        }
        if plain:
            update["$inc"] = _inc(plain)
        if bounds is not None:
            update |= bounds.update()
        collection = self._counters.collection
        await collection.update_one({"_id": shard}, update, upsert=True, session=session)
        if not pairs:
            return
        sources = sorted({key.split(".")[1] for key in pairs})
        counted = await collection.update_one(
            {"_id": shard, f"{SOURCE_KEYS}.{SOURCES_KEPT - 1}": {"$exists": False}},
            {"$inc": pairs, "$addToSet": {SOURCE_KEYS: {"$each": sources}}},
            session=session,
        )
        if not counted.matched_count:  # full: this shard no longer counts by source
            await collection.update_one(
                {"_id": shard},
                {"$set": {SOURCES_COUNTED: False}, "$unset": {BY_SOURCE: "", SOURCE_KEYS: ""}},
                session=session,
            )


@dataclass
class Bounds:
    """Bounds of a chatbot's leads (see the module's note): None where unknown."""

    first_at: datetime | None = None
    name_low: str | None = None
    name_high: str | None = None

    def include(self, created_at: datetime | None, name: str | None) -> None:
        if created_at is not None and (self.first_at is None or created_at < self.first_at):
            self.first_at = created_at
        if name is not None:
            if self.name_low is None or name < self.name_low:
                self.name_low = name
            if self.name_high is None or name > self.name_high:
                self.name_high = name

    def merge(self, other: Bounds) -> None:
        self.include(other.first_at, other.name_low)
        self.include(None, other.name_high)

    @property
    def empty(self) -> bool:
        return self.first_at is None and self.name_low is None

    def update(self) -> dict[str, Any]:
        """The update that moves a shard's bounds out to these (names kept coarse)."""
        stored = self.fields()
        low = {k: stored[k] for k in ("firstAt", "nameLow") if k in stored}
        out: dict[str, Any] = {"$min": low}
        if "nameHigh" in stored:
            out["$max"] = {"nameHigh": stored["nameHigh"]}
        return out if out["$min"] else {}

    def fields(self) -> dict[str, Any]:
        """The bounds as a shard keeps them: names as their classes (the module's note)."""
        out = {
            "firstAt": self.first_at,
            "nameLow": None if self.name_low is None else class_floor(self.name_low),
            "nameHigh": None if self.name_high is None else class_ceiling(self.name_high),
        }
        return {k: v for k, v in out.items() if v is not None}

    @classmethod
    def of(cls, doc: dict[str, Any]) -> Bounds:
        return cls(doc.get("firstAt"), doc.get("nameLow"), doc.get("nameHigh"))


class LeadCounters:
    def __init__(self, collection: Any) -> None:
        self.collection = collection
        self._busy: dict[str, set[int]] = {}

    async def read(self, chatbot_id: str, *, by_source: bool = True) -> dict[str, Any]:
        """``{"total": n, "byStatus": {status: n}, "bounds": Bounds}``, with
        ``"bySource": {source: {status: n}}`` when asked for and every shard counts by
        source."""
        counts: dict[str, Any] = {"total": 0, "byStatus": dict.fromkeys(STATUSES, 0)}
        bounds = Bounds()
        sources: dict[str, dict[str, int]] | None = {} if by_source else None
        unread = {SOURCE_KEYS: 0} if by_source else {SOURCE_KEYS: 0, BY_SOURCE: 0}
        async for doc in self.collection.find(_range(chatbot_id), unread):
            counts["total"] += doc.get("total", 0)
            for status, n in (doc.get("byStatus") or {}).items():
                counts["byStatus"][status] = counts["byStatus"].get(status, 0) + n
            bounds.merge(Bounds.of(doc))
            if sources is None or not doc.get(SOURCES_COUNTED):
                sources = None
                continue
            for key, statuses in (doc.get(BY_SOURCE) or {}).items():
                source = sources.setdefault(bytes.fromhex(key).decode(), {})
                for status, n in statuses.items():
                    source[status] = source.get(status, 0) + n
        counts["bounds"] = bounds
        if sources is not None:
            counts[BY_SOURCE] = sources
        return counts

    async def coarsen_name_bounds(self, migrations: Any) -> int:
        """Once per database: make the name bounds of shards written before they were
        coarse as they are now (``$min``/``$max`` of the coarse values, so a write racing
        it leaves a coarse value either way); returns the shards changed."""
        if await migrations.find_one({"_id": COARSE_NAMES}) is not None:
            return 0
        changed = 0
        shards = self.collection.find({"nameLow": {"$exists": True}}, {"nameLow": 1, "nameHigh": 1})
        async for doc in shards:
            low, high = doc.get("nameLow"), doc.get("nameHigh")
            update: dict[str, Any] = {}
            if isinstance(low, str) and class_floor(low) != low:
                update["$min"] = {"nameLow": class_floor(low)}
            # Coarse: one character, the first of its class (or U+10FFFF).
            if isinstance(high, str) and (len(high) != 1 or class_floor(high) != high):
                update["$max"] = {"nameHigh": class_ceiling(high)}
            if update:
                await self.collection.update_one({"_id": doc["_id"]}, update)
                changed += 1
        await migrations.update_one(
            {"_id": COARSE_NAMES}, {"$setOnInsert": {"at": utcnow()}}, upsert=True
        )
        return changed

    @contextlib.asynccontextmanager
    async def claim(self, chatbot_id: str) -> AsyncIterator[Claim]:
        """Shards for one write (see Claim), free for others of this process after it."""
        claim = Claim(self, chatbot_id)
        try:
            yield claim
        finally:
            busy = self._busy.get(chatbot_id, set())
            busy.difference_update(claim.used)
            if not busy:
                self._busy.pop(chatbot_id, None)

    def take(self, chatbot_id: str, *, avoid: list[int]) -> int:
        """A shard no other write of this process holds, and not one of ``avoid``."""
        busy = self._busy.setdefault(chatbot_id, set())
        free = [n for n in range(SHARDS) if n not in busy and n not in avoid]
        number = random.choice(free or range(SHARDS))  # noqa: S311 - spreading, not secrecy
        busy.add(number)
        return number

    async def replace(
        self,
        session: Any,
        chatbot_id: str,
        counts: dict[str, Any],
        bounds: Bounds,
        by_source: dict[str, dict[str, int]],
    ) -> None:
        """Set the chatbot's counters to ``counts``, ``by_source`` ({source: {status: n}})
        and ``bounds`` (one shard; the others removed)."""
        await self.collection.delete_many(_range(chatbot_id), session=session)
        await self.collection.insert_one(
            {
                "_id": f"{chatbot_id}:00",
                "chatbotId": chatbot_id,
                "total": counts["total"],
                "byStatus": counts["byStatus"],
                **bounds.fields(),
                **_source_counts(by_source),
            },
            session=session,
        )


def _source_counts(by_source: dict[str, dict[str, int]]) -> dict[str, Any]:
    """A recounted shard's counts by source, or none past SOURCES_KEPT sources."""
    if len(by_source) > SOURCES_KEPT:
        return {SOURCES_COUNTED: False}
    keys = {source: source.encode().hex() for source in by_source}
    return {
        BY_SOURCE: {keys[source]: statuses for source, statuses in by_source.items()},
        SOURCE_KEYS: sorted(keys.values()),
        SOURCES_COUNTED: True,
    }
