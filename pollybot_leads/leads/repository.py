"""The lead repository: every query is scoped to one chatbot, every write is atomic."""

from __future__ import annotations

import builtins
import logging
from collections.abc import AsyncGenerator
from dataclasses import replace
from datetime import datetime
from typing import Any

from aiohttp import web

from .. import ids
from ..errors import (
    IdempotencyInProgress,
    LeadMerged,
    LeadNotFound,
    PreconditionFailed,
    ServiceUnavailable,
)
from ..idempotency.records import IdempotencyStore, Receipt
from ..store.client import Mongo, aggregate, store_errors
from ..store.driver import BulkWriteError, DuplicateKeyError, UpdateOne
from ..store.group_commit import GroupCommit, KeyedLocks
from ..store.lookups import find_in_scope
from ..timeutil import to_ms, utcnow
from .counters import Bounds, LeadCounters
from .documents import FULL_PROJECTION, LIST_PROJECTION, merged_document, to_lead
from .event_log import EventLog, EventSignal
from .export_reads import LeadExporter
from .listing import LeadLister
from .phones import phone_key, to_e164
from .queries import LeadPage, LeadQuery
from .regions import DEFAULT_TTL, ChatbotRegions
from .rules import STATUSES, etag_matches, lead_etag
from .suppressions import SuppressionList
from .transaction import Batch
from .units import LeadStores, LeaseLost, TooHeavy, Unit
from .writes import CREATE, DELETE, ERASE, UPDATE, Deleted, Erased, LeadWrite, Outcome, Written

log = logging.getLogger(__name__)

# The marker, in ``migrations``, of a database whose leads all have ``phoneKey``.
PHONE_KEYS = "leads.phone_keys"
# Writes of one chatbot committed together at most (see write).
WRITE_BATCH_MAX = 200
DUPLICATE_KEY = 11000


class LeadRepository:
    """Leads, their counters and the delete audit.

    Every write commits in one transaction with the bookkeeping it implies (the
    chatbot's lead counters, the audit record), so no crash of the server or the store
    can leave them apart: ``total`` stays exact without a recount. A single lead is read
    by ``find_in_scope`` (store/lookups.py), and written by ``_id`` alone after the
    transaction has checked it is the chatbot's (leads/transaction.py).
    """

    def __init__(
        self,
        mongo: Mongo,
        *,
        max_count: int = 0,
        committed: EventSignal | None = None,
        suppression_secret: str = "",
        region_ttl: float = DEFAULT_TTL,
    ) -> None:
        quirks = mongo.quirks  # learnt by mongo.connect()
        # Notified after every commit (its events are then in the log): see EventSignal.
        self._committed = committed
        self._mongo = mongo
        self._leads = mongo.db["leads"]
        self._counters = LeadCounters(mongo.db["lead_counts"])
        self._quirks = quirks
        # The Idempotency-Key records: the middleware begins them, a write completes them.
        self.idempotency = IdempotencyStore(mongo.db, transaction=mongo.transaction)
        # Each chatbot's defaultRegion, which reads its phones written without "+".
        self.regions = ChatbotRegions(mongo.db["chatbots"], region_ttl)
        # Erased people a workspace may not capture again (leads/suppressions.py).
        self.suppressions = SuppressionList(mongo.db, suppression_secret)
        self._stores = LeadStores(
            leads=self._leads,
            guards=mongo.db["upsert_guards"],
            audit=mongo.db["audit_log"],
            events=EventLog(mongo.db, quirks),
            idempotency=self.idempotency,
            suppressions=self.suppressions,
            tombstones=mongo.db["merge_tombstones"],
        )
        # All writes of one chatbot take turns in this process, committed in groups.
        self._writes: GroupCommit[Unit, builtins.list[Outcome]] = GroupCommit(
            KeyedLocks(), self._commit_retrying, max_batch=WRITE_BATCH_MAX, weight=Unit.size
        )
        self._lister = LeadLister(
            self._leads,
            LIST_PROJECTION,
            counts=self.read_counts,
            quirks=quirks,
            max_count=max_count,
        )

    async def read_counts(self, chatbot_id: str, *, by_source: bool = True) -> dict[str, Any]:
        """The chatbot's lead counters (LeadCounters.read)."""
        return await self._counters.read(chatbot_id, by_source=by_source)

    async def _find_lead(
        self, chatbot_id: str, lead_id: str, projection: dict[str, int] | None = None, **kw: Any
    ) -> dict[str, Any]:
        """The chatbot's lead ``lead_id``, or LeadNotFound (also for another tenant's)."""
        if not ids.is_id(ids.LEAD, lead_id):
            raise LeadNotFound()
        scope = {"chatbotId": chatbot_id}
        doc = await find_in_scope(self._leads, lead_id, scope, projection, self._quirks, **kw)
        if doc is None:
            await self._raise_if_merged(chatbot_id, lead_id)
            raise LeadNotFound()
        return doc

    async def _raise_if_merged(self, chatbot_id: str, lead_id: str) -> None:
        """LeadMerged (naming the lead it went into) for a lead of the chatbot that a
        merge removed, while its tombstone is kept."""
        tomb = await self._stores.tombstones.find_one({"_id": lead_id})
        if tomb is not None and tomb["chatbotId"] == chatbot_id:
            raise LeadMerged(details={"mergedInto": tomb["mergedInto"]})

    async def _in_region(self, chatbot_id: str, query: LeadQuery) -> LeadQuery:
        """``query`` with its phone filter read in the chatbot's region, when it is
        written without "+" (one written with it reads the same anywhere)."""
        text = query.phone_text
        if text is None or to_e164(text) is not None:
            return query
        region = await self.regions.of(chatbot_id)
        return query if region is None else replace(query, phone=phone_key(text, region))

    @store_errors
    async def merge_preview(
        self,
        *,
        chatbot_id: str,
        target_id: str,
        source_ids: builtins.list[str],
        if_match: str | None,
    ) -> dict[str, Any]:
        """The lead a merge of ``source_ids`` into ``target_id`` would make, as of now;
        nothing is written (a merge's ``dryRun``). The same refusals as the merge."""
        target = await self._find_lead(chatbot_id, target_id)
        if if_match is not None and not etag_matches(if_match, lead_etag(to_lead(target))):
            raise PreconditionFailed()
        sources = [await self._find_lead(chatbot_id, source_id) for source_id in source_ids]
        region = await self.regions.of(chatbot_id)
        return to_lead(merged_document(target, sources, utcnow(), region))

    @store_errors
    async def duplicates(
        self, *, chatbot_id: str, lead_id: str, limit: int
    ) -> builtins.list[tuple[dict[str, Any], builtins.list[str]]]:
        """The chatbot's other leads with the lead's email (case-insensitive) or phone
        number (E.164), newest first, at most ``limit``, each with what matched: two
        equality reads (``by_email``, ``by_phone``), never another chatbot's leads."""
        lead = await self._find_lead(chatbot_id, lead_id)
        matched: dict[str, tuple[dict[str, Any], builtins.list[str]]] = {}
        keys = [("email", "emailFolded", lead.get("emailFolded"))]
        phone = lead.get("phoneKey")
        if isinstance(phone, str) and phone.startswith("+"):
            keys.append(("phone", "phoneKey", phone))
        for name, field, value in keys:
            if value is None:
                continue
            found = (
                self._leads.find({"chatbotId": chatbot_id, field: value}, LIST_PROJECTION)
                .sort([("createdAt", -1), ("_id", -1)])
                .limit(limit + 1)
            )
            async for doc in found:
                if doc["_id"] == lead_id:
                    continue
                matched.setdefault(doc["_id"], (doc, []))[1].append(name)
        ordered = sorted(
            matched.values(), key=lambda m: (to_ms(m[0]["createdAt"]), m[0]["_id"]), reverse=True
        )
        return [(to_lead(doc), names) for doc, names in ordered[:limit]]

    @store_errors
    async def write(
        self,
        *,
        chatbot_id: str,
        workspace_id: str,
        writes: builtins.list[LeadWrite],
        receipt: Receipt | None = None,
        max_entries: int | None = None,
    ) -> builtins.list[Outcome]:
        """Apply ``writes`` to the chatbot's leads, in order, in one transaction.

        Each write gets its own outcome (Written, Deleted, or the AppError that refused
        it alone: a missing lead, a failed If-Match, a merge breaking a limit). Everything
        the writes imply commits with them: the counters, the delete audit, one event
        per change, and ``receipt``'s idempotency record; so no crash can leave them
        apart. The outcomes are durable once this returns. ``max_entries``: the most
        index entries the writes may write (a batch's limit); over it nothing is
        written and the refusal is raised.

        Writes of one chatbot that arrive while one of its transactions is in flight are
        committed together, in arrival order, in the next one (a group commit): each
        still sees the leads as the writes before it left them, and 50 concurrent writes
        cost a few transactions instead of 50 conflicting ones.
        """
        unit = Unit(workspace_id, writes, receipt, max_entries)
        return await self._writes.submit(chatbot_id, unit)

    async def _one(
        self, chatbot_id: str, workspace_id: str, write: LeadWrite
    ) -> Written | Deleted | Erased:
        (outcome,) = await self.write(
            chatbot_id=chatbot_id, workspace_id=workspace_id, writes=[write]
        )
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def create(
        self, *, chatbot_id: str, workspace_id: str, fields: dict[str, Any]
    ) -> dict[str, Any]:
        """Store a new lead; it is durable, counted and announced once this returns."""
        written = await self._one(chatbot_id, workspace_id, LeadWrite(CREATE, fields))
        assert isinstance(written, Written)
        return written.lead

    async def update(
        self, *, chatbot_id: str, lead_id: str, changes: dict[str, Any], workspace_id: str = ""
    ) -> dict[str, Any]:
        """Apply a partial update; the result is the lead exactly as this update left it."""
        written = await self._one(chatbot_id, workspace_id, LeadWrite(UPDATE, changes, lead_id))
        assert isinstance(written, Written)
        return written.lead

    async def delete(
        self, *, chatbot_id: str, lead_id: str, audit: dict[str, Any], workspace_id: str = ""
    ) -> datetime:
        """Remove the lead for good, with its audit record, counters and event."""
        deleted = await self._one(
            chatbot_id, workspace_id, LeadWrite(DELETE, {}, lead_id, audit=audit)
        )
        assert isinstance(deleted, Deleted)
        return deleted.deleted_at

    async def erase(
        self, *, chatbot_id: str, workspace_id: str, match: dict[str, str], audit: dict[str, Any]
    ) -> Erased:
        """Delete up to ERASE_CHUNK of the chatbot's leads matching ``match`` (one of
        ``emailFolded``, ``phoneKey``), each as ``delete`` would, its event and audit
        saying ``"reason": "erasure"``; ``more`` when others are left for another call."""
        write = LeadWrite(ERASE, dict(match), audit=audit, reason="erasure")
        erased = await self._one(chatbot_id, workspace_id, write)
        assert isinstance(erased, Erased)
        return erased

    async def _commit_retrying(
        self, chatbot_id: str, units: builtins.list[Unit]
    ) -> builtins.list[builtins.list[Outcome] | Exception]:
        for _ in range(5):  # a 64-bit id collides with vanishing odds; never overwrite one
            try:
                return await self._commit(chatbot_id, units)
            except BulkWriteError as exc:  # insert_many's form of a duplicate key
                errors = exc.details.get("writeErrors") or [{}]
                if any(error.get("code") != DUPLICATE_KEY for error in errors):
                    raise
            except DuplicateKeyError:
                continue
        raise ServiceUnavailable("Could not allocate a lead id")

    async def _commit(
        self, chatbot_id: str, units: builtins.list[Unit]
    ) -> builtins.list[builtins.list[Outcome] | Exception]:
        # A unit whose idempotency lease passed to a retry of its request (its holder
        # was presumed dead), or that would write more index entries than it may, is
        # left out, and the others committed without it.
        refused: dict[int, Exception] = {}
        region = await self.regions.of(chatbot_id)
        async with self._counters.claim(chatbot_id) as counts:

            async def work(session: Any) -> builtins.list[builtins.list[Outcome] | Exception]:
                live = [unit for i, unit in enumerate(units) if i not in refused]
                batch = Batch(self._stores, session, chatbot_id, region)
                await batch.prefetch(live)
                results = [await batch.apply(unit) for unit in live]
                await batch.flush(counts)
                return results

            while True:
                if len(refused) == len(units):  # nothing left to write
                    return [refused[i] for i in range(len(units))]
                try:
                    done = iter(await self._mongo.transaction(work))
                except LeaseLost as lost:
                    refused[units.index(lost.unit)] = IdempotencyInProgress()
                    continue
                except TooHeavy as heavy:
                    refused[units.index(heavy.unit)] = heavy.error
                    continue
                if self._committed is not None:
                    self._committed.notify()
                return [refused[i] if i in refused else next(done) for i in range(len(units))]

    @store_errors
    async def insert_many(self, *, docs: builtins.list[dict[str, Any]]) -> int:
        """Bulk load of documents made by build_lead_document (seeding, benchmarks).

        Bypasses the counters and the events: run ``recount`` for each chatbot afterwards.
        """
        for doc in docs:
            doc.setdefault("_id", ids.new_id(ids.LEAD))
        result = await self._leads.insert_many(docs, ordered=False)
        return len(result.inserted_ids)

    @store_errors
    async def get(self, *, chatbot_id: str, lead_id: str) -> dict[str, Any]:
        return to_lead(await self._find_lead(chatbot_id, lead_id, FULL_PROJECTION))

    @store_errors
    async def list(self, *, chatbot_id: str, query: LeadQuery) -> LeadPage:
        page = await self._lister.list(chatbot_id, await self._in_region(chatbot_id, query))
        return LeadPage(
            [to_lead(doc) for doc in page.leads],
            page.total,
            page.has_next,
            page.last_position,
            page.total_exact,
        )

    @store_errors
    async def explain_list(
        self, *, chatbot_id: str, query: LeadQuery
    ) -> builtins.list[dict[str, Any]]:
        """The server's plans for the queries ``list`` runs for this query."""
        return await self._lister.explain(chatbot_id, query)

    @store_errors
    async def recount(self, *, chatbot_id: str) -> dict[str, Any]:
        """Recompute a chatbot's lead counters from its leads (after a bulk load).

        Counted inside a transaction and written in the same one, so a create or delete
        running meanwhile either is in the count or conflicts and runs again.
        """

        async def work(session: Any) -> dict[str, Any]:
            # One pass over the chatbot's leads: counts by (status, source), with the
            # bounds of each group (the chatbot's are theirs combined).
            pipeline: builtins.list[dict[str, Any]] = [
                {"$match": {"chatbotId": chatbot_id}},
                {
                    "$group": {
                        "_id": {"s": "$status", "src": "$source"},
                        "n": {"$sum": 1},
                        "first": {"$min": "$createdAt"},
                        "low": {"$min": "$nameSort"},
                        "high": {"$max": "$nameSort"},
                    }
                },
            ]
            by_status = dict.fromkeys(STATUSES, 0)
            by_source: dict[str, dict[str, int]] = {}
            bounds = Bounds()
            for row in await aggregate(self._leads, pipeline, session=session):
                status, source = row["_id"].get("s"), row["_id"].get("src")
                if status not in by_status:
                    continue
                by_status[status] += row["n"]
                if isinstance(source, str):
                    by_source.setdefault(source, {})[status] = row["n"]
                bounds.merge(Bounds(row.get("first"), row.get("low"), row.get("high")))
            counts = {"total": sum(by_status.values()), "byStatus": by_status}
            await self._counters.replace(session, chatbot_id, counts, bounds, by_source)
            return counts

        return await self._mongo.transaction(work)

    async def migrate_counters(self, chatbots: Any) -> int:
        """Move counters kept on chatbot documents (before 0.2) into ``lead_counts``."""
        moved = 0
        async for doc in chatbots.find({"leadCounts": {"$exists": True}}, {"_id": 1}):
            await self.recount(chatbot_id=doc["_id"])
            await chatbots.update_one({"_id": doc["_id"]}, {"$unset": {"leadCounts": ""}})
            moved += 1
        if moved:
            log.info("lead counters of %d chatbots recounted into lead_counts", moved)
        return moved

    async def coarsen_name_bounds(self) -> int:
        """Name bounds of counter shards from before they were coarse made coarse, once
        per database (LeadCounters.coarsen_name_bounds)."""
        changed = await self._counters.coarsen_name_bounds(self._mongo.db["migrations"])
        if changed:
            log.info("name bounds of %d lead counter shards made coarse", changed)
        return changed

    async def fill_phone_keys(self, *, chunk: int = 200) -> int:
        """Once per database: give the leads stored before ``phoneKey`` existed theirs (an
        erasure by phone finds leads by it). Resumable: each chunk commits on its own, and
        a lead changed meanwhile (which sets its own) is left as it is; returns the leads
        changed."""
        migrations = self._mongo.db["migrations"]
        if await migrations.find_one({"_id": PHONE_KEYS}) is not None:
            return 0
        changed, last = 0, ""
        while True:
            found = (
                self._leads.find(
                    {"_id": {"$gt": last}, "phoneKey": {"$exists": False}}, {"phone": 1}
                )
                .sort("_id", 1)
                .limit(chunk)
            )
            docs = [doc async for doc in found]
            if not docs:
                break
            last = docs[-1]["_id"]
            writes = [
                UpdateOne(
                    {"_id": doc["_id"], "phone": doc.get("phone"), "phoneKey": {"$exists": False}},
                    {"$set": {"phoneKey": phone_key(doc.get("phone"))}},
                )
                for doc in docs
            ]

            async def work(session: Any, writes: builtins.list[UpdateOne] = writes) -> int:
                result = await self._leads.bulk_write(writes, ordered=False, session=session)
                return int(result.modified_count)

            changed += await self._mongo.transaction(work)
        await migrations.update_one({"_id": PHONE_KEYS}, {"$set": {"at": utcnow()}}, upsert=True)
        if changed:
            log.info("phone keys of %d leads filled in", changed)
        return changed

    # -- export (the walk itself is in leads/export_reads.py, store/walks.py) ----------

    async def export(
        self,
        *,
        chatbot_id: str,
        query: LeadQuery,
        explain: builtins.list[dict[str, Any]] | None = None,
    ) -> AsyncGenerator[builtins.list[dict[str, Any]], None]:
        """Every lead matching ``query`` (whose sort is one of EXPORT_SORTS), once, in
        pages as the list shows them: one bounded read per page, and a page may be
        empty. Store failures raise as in every method (a 503). With ``explain``, the
        server's explanation of every read is appended to it."""
        exporter = LeadExporter(self._leads, LIST_PROJECTION, quirks=self._quirks)
        query = await self._in_region(chatbot_id, query)
        async for docs in exporter.pages(chatbot_id, query, explain=explain):
            yield [to_lead(doc) for doc in docs]


leads_repo_key = web.AppKey("leads_repo", LeadRepository)
