"""The lead repository: every query is scoped to one chatbot, every write is atomic."""

from __future__ import annotations

import builtins
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from .. import ids
from ..errors import (
    AppError,
    IdempotencyInProgress,
    LeadNotFound,
    PreconditionFailed,
    ServiceUnavailable,
    ValidationFailed,
)
from ..idempotency.records import IdempotencyStore, Receipt
from ..store.client import Mongo, aggregate, store_errors
from ..store.driver import BulkWriteError, DeleteOne, DuplicateKeyError, UpdateOne
from ..store.group_commit import GroupCommit, KeyedLocks
from ..timeutil import MILLISECOND, to_ms, utcnow
from .counters import Bounds, Claim, LeadCounters, pair_key
from .event_log import (
    LEAD_CREATED,
    LEAD_DELETED,
    LEAD_UPDATED,
    EventLog,
    EventSignal,
    lead_changes,
)
from .export_reads import LeadExporter
from .listing import LeadLister
from .metadata import apply_merge_patch, metadata_problems
from .queries import LeadPage, LeadQuery
from .rules import (
    DEFAULT_STATUS,
    STATUS_HISTORY_LIMIT,
    STATUSES,
    etag_matches,
    fold,
    lead_etag,
    metadata_index_entries,
    search_prefixes,
    search_terms,
)
from .writes import CREATE, DELETE, UPDATE, UPSERT, Deleted, LeadWrite, Outcome, Written

log = logging.getLogger(__name__)

PUBLIC_FIELDS = (
    "chatbotId",
    "workspaceId",
    "name",
    "email",
    "phone",
    "source",
    "status",
    "metadata",
    "statusHistory",
    "createdAt",
    "updatedAt",
)
LIST_PROJECTION = {field: 1 for field in PUBLIC_FIELDS if field != "statusHistory"} | {
    "nameSort": 1
}
FULL_PROJECTION = {field: 1 for field in PUBLIC_FIELDS}
# Writes of one chatbot committed together at most (see write).
WRITE_BATCH_MAX = 200
DUPLICATE_KEY = 11000
# Fields earlier versions kept on leads; an update removes them.
LEGACY_FIELDS = ("metadataVersion",)


def _to_lead(doc: dict[str, Any]) -> dict[str, Any]:
    lead = {"id": doc["_id"]}
    for field in PUBLIC_FIELDS:
        if field in doc:
            lead[field] = doc[field]
    lead.setdefault("phone", None)
    lead.setdefault("source", None)
    lead.setdefault("metadata", {})
    return lead


def _derived(name: str, email: str) -> dict[str, Any]:
    """Fields kept beside name and email so that sorting and search use an index."""
    terms = search_terms(name, email)
    return {
        "nameSort": fold(name),
        "emailFolded": fold(email),
        "searchTerms": terms,
        "searchPrefixes": search_prefixes(terms),
    }


def build_lead_document(
    chatbot_id: str, workspace_id: str, fields: dict[str, Any], now: datetime
) -> dict[str, Any]:
    """A new lead as stored (without its ``_id``): validated fields plus derived ones."""
    status = fields.get("status") or DEFAULT_STATUS
    return {
        "chatbotId": chatbot_id,
        "workspaceId": workspace_id,
        "name": fields["name"],
        "email": fields["email"],
        "phone": fields.get("phone"),
        "source": fields.get("source"),
        "status": status,
        "metadata": fields.get("metadata") or {},
        "metadataIndex": metadata_index_entries(fields.get("metadata") or {}),
        "statusHistory": [{"status": status, "changedAt": now}],
        "createdAt": now,
        "updatedAt": now,
        **_derived(fields["name"], fields["email"]),
    }


@dataclass
class _Unit:
    """One request's writes: they commit in one transaction, with its receipt."""

    workspace_id: str
    writes: list[LeadWrite]
    receipt: Receipt | None

    def size(self) -> int:
        return len(self.writes)


class LeadRepository:
    """Leads, their counters and the delete audit.

    Every write commits in one transaction with the bookkeeping it implies (the
    chatbot's lead counters, the audit record), so no crash of the server or the store
    can leave them apart: ``total`` stays exact without a recount. Single leads are read
    and written by ``_id`` alone and checked against the chatbot in the application
    (see quirks.id_lookup_alone; the check runs inside the transaction on every store).
    """

    def __init__(
        self, mongo: Mongo, *, max_count: int = 0, committed: EventSignal | None = None
    ) -> None:
        quirks = mongo.quirks  # learnt by mongo.connect()
        # Notified after every commit (its events are then in the log): see EventSignal.
        self._committed = committed
        self._mongo = mongo
        self._leads = mongo.db["leads"]
        self._audit = mongo.db["audit_log"]
        self._counters = LeadCounters(mongo.db["lead_counts"])
        self._quirks = quirks
        self._events = EventLog(mongo.db)
        # The Idempotency-Key records: the middleware begins them, a write completes them.
        self.idempotency = IdempotencyStore(mongo.db)
        self._guards = mongo.db["upsert_guards"]
        # All writes of one chatbot take turns in this process, committed in groups.
        self._writes: GroupCommit[_Unit, builtins.list[Outcome]] = GroupCommit(
            KeyedLocks(), self._commit_retrying, max_batch=WRITE_BATCH_MAX, weight=_Unit.size
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
        if self._quirks.projection_in_app:
            projection = None
        elif projection is not None:
            projection = {**projection, "chatbotId": 1}  # for the tenant check below
        if self._quirks.id_lookup_alone:
            doc = await self._leads.find_one({"_id": lead_id}, projection, **kw)
        else:
            doc = await self._leads.find_one(
                {"_id": lead_id, "chatbotId": chatbot_id}, projection, **kw
            )
        if doc is None or doc.get("chatbotId") != chatbot_id:
            raise LeadNotFound()
        found: dict[str, Any] = doc
        return found

    @store_errors
    async def write(
        self,
        *,
        chatbot_id: str,
        workspace_id: str,
        writes: builtins.list[LeadWrite],
        receipt: Receipt | None = None,
    ) -> builtins.list[Outcome]:
        """Apply ``writes`` to the chatbot's leads, in order, in one transaction.

        Each write gets its own outcome (Written, Deleted, or the AppError that refused
        it alone: a missing lead, a failed If-Match, a merge breaking a limit). Everything
        the writes imply commits with them: the counters, the delete audit, one event
        per change, and ``receipt``'s idempotency record; so no crash can leave them
        apart. The outcomes are durable once this returns.

        Writes of one chatbot that arrive while one of its transactions is in flight are
        committed together, in arrival order, in the next one (a group commit): each
        still sees the leads as the writes before it left them, and 50 concurrent writes
        cost a few transactions instead of 50 conflicting ones.
        """
        return await self._writes.submit(chatbot_id, _Unit(workspace_id, writes, receipt))

    async def _one(self, chatbot_id: str, workspace_id: str, write: LeadWrite) -> Written | Deleted:
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

    async def _commit_retrying(
        self, chatbot_id: str, units: builtins.list[_Unit]
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
        self, chatbot_id: str, units: builtins.list[_Unit]
    ) -> builtins.list[builtins.list[Outcome] | Exception]:
        # A unit whose idempotency lease passed to a retry of its request (its holder
        # was presumed dead) is left out, and the others committed without it.
        refused: dict[int, Exception] = {}
        async with self._counters.claim(chatbot_id) as counts:

            async def work(session: Any) -> builtins.list[builtins.list[Outcome] | Exception]:
                live = [unit for i, unit in enumerate(units) if i not in refused]
                batch = _Batch(self, session, chatbot_id)
                await batch.prefetch(live)
                results = [await batch.apply(unit) for unit in live]
                await batch.flush(counts)
                return results

            while True:
                try:
                    done = iter(await self._mongo.transaction(work))
                except _LeaseLost as lost:
                    refused[units.index(lost.unit)] = IdempotencyInProgress()
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
        return _to_lead(await self._find_lead(chatbot_id, lead_id, FULL_PROJECTION))

    @store_errors
    async def list(self, *, chatbot_id: str, query: LeadQuery) -> LeadPage:
        page = await self._lister.list(chatbot_id, query)
        return LeadPage(
            [_to_lead(doc) for doc in page.leads],
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

    # -- export (the walk itself is in leads/export_reads.py) --------------------------

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
        async for docs in exporter.pages(chatbot_id, query, explain=explain):
            yield [_to_lead(doc) for doc in docs]


class _LeaseLost(Exception):
    def __init__(self, unit: _Unit) -> None:
        super().__init__("idempotency lease lost")
        self.unit = unit


class _Batch:
    """One attempt of one transaction: the units' writes applied in order to the leads
    as read in the transaction (and as earlier writes of the batch left them), then
    written out together by ``flush``."""

    def __init__(self, repo: LeadRepository, session: Any, chatbot_id: str) -> None:
        self.repo, self.session, self.chatbot_id = repo, session, chatbot_id
        self.now = utcnow()
        self.workspace_id = ""
        self.states: dict[str, dict[str, Any] | None] = {}  # lead id -> now (None: gone)
        self.stored: dict[str, dict[str, Any] | None] = {}  # lead id -> as read (None: new)
        self.counts: dict[str, int] = {}
        self.bounds = Bounds()
        self.audits: list[dict[str, Any]] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.guarded: set[str] = set()
        self.missing: set[str] = set()  # lead ids read and not this chatbot's
        self.by_email: dict[str, list[dict[str, Any]]] = {}  # folded email -> leads read

    async def prefetch(self, units: list[_Unit]) -> None:
        """Read what many writes need in one round trip each, rather than one per write:
        the leads that updates and deletes name, and the leads (and guards) of the
        emails that upserts name."""
        lead_ids = sorted(
            {
                write.lead_id
                for unit in units
                for write in unit.writes
                if write.kind in (UPDATE, DELETE)
                and write.lead_id
                and ids.is_id(ids.LEAD, write.lead_id)
            }
        )
        if len(lead_ids) > 1:  # one is read as it comes (the same round trip)
            found = self.repo._leads.find({"_id": {"$in": lead_ids}}, session=self.session)
            async for doc in found:
                if doc.get("chatbotId") == self.chatbot_id:
                    self._read(doc)
            self.missing.update(i for i in lead_ids if i not in self.states)
        emails = sorted(
            {fold(w.fields["email"]) for unit in units for w in unit.writes if w.kind == UPSERT}
        )
        if emails:
            await self._guard(emails)
            self.by_email = {email: [] for email in emails}
            found = self.repo._leads.find(
                {"chatbotId": self.chatbot_id, "emailFolded": {"$in": emails}},
                session=self.session,
            )
            async for doc in found:
                self.by_email[doc["emailFolded"]].append(doc)

    async def _guard(self, emails: list[str]) -> None:
        """Write the upsert guard of each email (see _by_email), all in one round trip."""
        await self.repo._guards.bulk_write(
            [
                UpdateOne(
                    {"_id": f"{self.chatbot_id}:{email}"}, {"$set": {"at": self.now}}, upsert=True
                )
                for email in emails
            ],
            ordered=False,
            session=self.session,
        )
        self.guarded.update(emails)

    def _read(self, doc: dict[str, Any]) -> dict[str, Any]:
        self.states[doc["_id"]] = self.stored[doc["_id"]] = doc
        self.workspace_id = self.workspace_id or doc.get("workspaceId", "")
        return doc

    async def apply(self, unit: _Unit) -> list[Outcome] | Exception:
        self.workspace_id = self.workspace_id or unit.workspace_id
        receipt = unit.receipt
        outcomes: list[Outcome] = []
        for write in unit.writes:
            try:
                outcomes.append(await self._apply(unit.workspace_id, write))
            except AppError as exc:  # this write alone is refused
                outcomes.append(exc)
        if receipt is not None and not await self.repo.idempotency.complete(
            receipt.lease, receipt.render(outcomes), session=self.session
        ):
            raise _LeaseLost(unit)  # the transaction is dropped and runs without it
        return outcomes

    async def _apply(self, workspace_id: str, write: LeadWrite) -> Outcome:
        if write.kind == CREATE:
            return self._create(workspace_id, write.fields)
        if write.kind == UPSERT:
            target = await self._by_email(write.fields["email"])
            if target is None:
                return self._create(workspace_id, write.fields)
            return self._update(target, write.merge if write.merge is not None else write.fields)
        current = await self._load(write.lead_id or "")
        if write.if_match is not None and not etag_matches(
            write.if_match, lead_etag(_to_lead(current))
        ):
            raise PreconditionFailed()
        if write.kind == UPDATE:
            return self._update(current, write.fields)
        return self._delete(current, write.audit or {})

    def _count(self, changes: dict[str, int], pair: str | None = None, by: int = 1) -> None:
        """Move the counters by ``changes``, and the (status, source) ``pair`` by ``by``."""
        if pair is not None:
            changes = {**changes, pair: by}
        for key, n in changes.items():
            self.counts[key] = self.counts.get(key, 0) + n

    def _create(self, workspace_id: str, fields: dict[str, Any]) -> Written:
        doc: dict[str, Any] = {"_id": ids.new_id(ids.LEAD)}
        doc.update(build_lead_document(self.chatbot_id, workspace_id, fields, self.now))
        self.states[doc["_id"]] = doc
        self.stored[doc["_id"]] = None
        self._count({"total": 1, doc["status"]: 1}, pair_key(doc["status"], doc.get("source")))
        self.bounds.include(doc["createdAt"], doc["nameSort"])
        lead = _to_lead(doc)
        self.events.append((LEAD_CREATED, {"lead": lead}))
        return Written(lead, created=True)

    def _update(self, current: dict[str, Any], changes: dict[str, Any]) -> Written:
        after = apply_update(current, changes, self.now)
        self.states[current["_id"]] = after
        if after["status"] != current["status"]:
            self._count({current["status"]: -1, after["status"]: 1})
        before_pair = pair_key(current["status"], current.get("source"))
        after_pair = pair_key(after["status"], after.get("source"))
        if before_pair != after_pair:
            self._count({}, before_pair, -1)
            self._count({}, after_pair)
        if after.get("nameSort") != current.get("nameSort"):
            self.bounds.include(None, after["nameSort"])
        lead = _to_lead(after)
        changed = lead_changes(_to_lead(current), lead)
        self.events.append((LEAD_UPDATED, {"lead": lead, "changes": changed}))
        return Written(lead, created=False)

    def _delete(self, current: dict[str, Any], audit: dict[str, Any]) -> Deleted:
        lead_id = current["_id"]
        self.states[lead_id] = None
        self._count(
            {"total": -1, current["status"]: -1},
            pair_key(current["status"], current.get("source")),
            -1,
        )
        self.audits.append(
            {
                "_id": ids.new_id("aud_"),
                "action": "lead.delete",
                "leadId": lead_id,
                "chatbotId": self.chatbot_id,
                "at": self.now,
                "workspaceId": current.get("workspaceId"),
                **audit,
            }
        )
        self.events.append((LEAD_DELETED, {"lead": {"id": lead_id}}))
        return Deleted(lead_id, self.now)

    async def _load(self, lead_id: str) -> dict[str, Any]:
        """The chatbot's lead as it stands in this batch, or LeadNotFound."""
        if lead_id not in self.states:
            doc = None
            if ids.is_id(ids.LEAD, lead_id) and lead_id not in self.missing:
                doc = await self.repo._leads.find_one({"_id": lead_id}, session=self.session)
            if doc is None or doc.get("chatbotId") != self.chatbot_id:
                raise LeadNotFound()  # another chatbot's lead is never touched
            self._read(doc)
        state = self.states[lead_id]
        if state is None:
            raise LeadNotFound()
        return state

    async def _by_email(self, email: str) -> dict[str, Any] | None:
        """The chatbot's most recently created lead with this email (case-insensitive),
        as this batch left it; from the leads ``prefetch`` read (after writing the
        email's guard: upserts of one email in other processes write that document
        too, so two of them cannot both miss each other's lead; one conflicts and runs
        again. Every write of the chatbot also moves its event sequence, which orders
        them as well; the guard keeps upserts right without relying on that)."""
        folded = fold(email)
        candidates = [
            state
            for state in self.states.values()
            if state is not None and state.get("emailFolded") == folded
        ]
        candidates += [doc for doc in self.by_email[folded] if doc["_id"] not in self.states]
        if not candidates:
            return None
        best = max(candidates, key=lambda doc: (to_ms(doc["createdAt"]), doc["_id"]))
        if best["_id"] not in self.states:
            self._read(best)
        return best

    async def flush(self, counts: Claim) -> None:
        """Write out the batch: leads, audit records, counters and events."""
        leads, session = self.repo._leads, self.session
        new = [
            state
            for lead_id, state in self.states.items()
            if self.stored.get(lead_id) is None and state is not None
        ]
        if new:
            await leads.insert_many(new, session=session)
        writes: builtins.list[UpdateOne | DeleteOne] = []
        for lead_id, before in self.stored.items():
            after = self.states[lead_id]
            if before is None or after is before:
                continue
            if after is None:
                writes.append(DeleteOne({"_id": lead_id}))
                continue
            sets = {k: v for k, v in after.items() if before.get(k, _ABSENT) != v}
            update: dict[str, Any] = {"$set": sets}
            gone = [k for k in before if k not in after]
            if gone:
                update["$unset"] = dict.fromkeys(gone, "")
            writes.append(UpdateOne({"_id": lead_id}, update))
        if writes:  # in one round trip
            await leads.bulk_write(writes, ordered=True, session=session)
        if self.audits:
            await self.repo._audit.insert_many(self.audits, session=session)
        changes = {key: n for key, n in self.counts.items() if n}
        if changes or not self.bounds.empty:
            await counts.add(session, changes, self.bounds)
        await self.repo._events.append(
            session, self.chatbot_id, self.workspace_id, self.events, self.now
        )


def apply_update(current: dict[str, Any], changes: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The stored lead ``current`` with ``changes`` applied at ``now`` (a new dict)."""
    after = {k: v for k, v in current.items() if k not in LEGACY_FIELDS}
    for field in ("name", "email", "phone", "source"):
        if field in changes:
            after[field] = changes[field]
    if "name" in changes or "email" in changes:
        after.update(_derived(after["name"], after["email"]))
    if "status" in changes and changes["status"] != current["status"]:
        history = list(current.get("statusHistory") or [])
        # Times of the history never run backwards, even within one millisecond.
        last = to_ms(history[-1]["changedAt"]) if history else None
        changed_at = max(now, last + MILLISECOND) if last else now
        history.append({"status": changes["status"], "changedAt": changed_at})
        after["status"] = changes["status"]
        after["statusHistory"] = history[-STATUS_HISTORY_LIMIT:]
    if "metadata" in changes:
        merged = apply_merge_patch(current.get("metadata") or {}, changes["metadata"])
        problems = metadata_problems(merged)
        if problems:
            raise ValidationFailed("Metadata after the merge breaks a limit", details=problems)
        after["metadata"] = merged
        after["metadataIndex"] = metadata_index_entries(merged)
    # updatedAt always moves forward, even within one millisecond of the last update.
    previous = current.get("updatedAt")
    after["updatedAt"] = max(now, to_ms(previous) + MILLISECOND) if previous else now
    return after


_ABSENT = object()


leads_repo_key = web.AppKey("leads_repo", LeadRepository)
