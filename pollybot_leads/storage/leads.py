"""The lead repository: every query is scoped to one chatbot, every write is atomic."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from pymongo.errors import BulkWriteError, DuplicateKeyError

from ..domain import ids
from ..domain.leads import (
    DEFAULT_STATUS,
    STATUS_HISTORY_LIMIT,
    STATUSES,
    fold,
    metadata_index_entries,
    search_prefixes,
    search_terms,
)
from ..domain.metadata import apply_merge_patch, metadata_problems
from ..domain.queries import LeadPage, LeadQuery
from ..domain.timeutil import MILLISECOND, to_ms, utcnow
from ..errors import LeadNotFound, ServiceUnavailable, ValidationFailed
from .batching import GroupCommit, KeyedLocks
from .client import Mongo, store_errors
from .counters import Claim, LeadCounters
from .export import LeadExporter
from .listing import LeadLister

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
# Creates committed together at most (see create), and the lock their batches take turns on.
CREATE_BATCH_MAX = 100
CREATE_QUEUE = "creates"
DUPLICATE_KEY = 11000
# Fields earlier versions kept on leads; an update removes them.
LEGACY_FIELDS = ("metadataVersion",)


def _to_lead(doc: dict) -> dict:
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
    chatbot_id: str, workspace_id: str, fields: dict, now: datetime
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


class LeadRepository:
    """Leads, their counters and the delete audit.

    Every write commits in one transaction with the bookkeeping it implies (the
    chatbot's lead counters, the audit record), so no crash of the server or the store
    can leave them apart: ``total`` stays exact without a recount. Single leads are read
    and written by ``_id`` alone and checked against the chatbot in the application
    (see quirks.id_lookup_alone; the check runs inside the transaction on every store).
    """

    def __init__(self, mongo: Mongo, *, max_count: int = 0) -> None:
        quirks = mongo.quirks  # learnt by mongo.connect()
        self._mongo = mongo
        self._leads = mongo.db["leads"]
        self._audit = mongo.db["audit_log"]
        self._counters = LeadCounters(mongo.db["lead_counts"])
        self._quirks = quirks
        self._locks = KeyedLocks()  # writers of one lead (and all creates) take turns
        self._creates: GroupCommit[dict[str, Any], None] = GroupCommit(
            self._locks, self._write_creates, max_batch=CREATE_BATCH_MAX
        )
        self._updates: GroupCommit[tuple[str, dict[str, Any]], dict[str, Any]] = GroupCommit(
            self._locks, self._write_updates
        )
        self._lister = LeadLister(
            self._leads,
            LIST_PROJECTION,
            counts=self.read_counts,
            quirks=quirks,
            max_count=max_count,
        )

    async def read_counts(self, chatbot_id: str) -> dict[str, Any]:
        """The chatbot's lead counters: ``{"total": n, "byStatus": {status: n}}``."""
        return await self._counters.read(chatbot_id)

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
        return doc

    @store_errors
    async def create(self, *, chatbot_id: str, workspace_id: str, fields: dict) -> dict:
        """Store a new lead; it is durable, and counted, once this returns.

        Creates that arrive while another batch is being written are committed together
        in the next transaction (a group commit: one journal sync and one counter write
        per chatbot for the whole batch), so many concurrent creates cost a few
        transactions instead of one each.
        """
        doc = build_lead_document(chatbot_id, workspace_id, fields, utcnow())
        await self._creates.submit(CREATE_QUEUE, doc)
        return _to_lead(doc)

    async def _write_creates(self, _key: str, docs: list[dict[str, Any]]) -> list[None]:
        for _ in range(5):  # a 64-bit id collides with vanishing odds; never overwrite one
            for doc in docs:
                doc["_id"] = ids.new_id(ids.LEAD)
            try:
                await self._insert_counted(docs)
                return [None] * len(docs)
            except BulkWriteError as exc:  # insert_many's form of a duplicate key
                errors = exc.details.get("writeErrors") or [{}]
                if any(error.get("code") != DUPLICATE_KEY for error in errors):
                    raise
            except DuplicateKeyError:
                continue
        raise ServiceUnavailable("Could not allocate a lead id")

    async def _insert_counted(self, docs: list[dict[str, Any]]) -> None:
        """Insert ``docs`` and count them on their chatbots, in one transaction."""
        changes: dict[str, dict[str, int]] = {}
        for doc in docs:
            counts = changes.setdefault(doc["chatbotId"], {"total": 0})
            counts["total"] += 1
            counts[doc["status"]] = counts.get(doc["status"], 0) + 1
        async with contextlib.AsyncExitStack() as stack:
            claims = {
                chatbot: await stack.enter_async_context(self._counters.claim(chatbot))
                for chatbot in changes
            }

            async def write(session: Any) -> None:
                await self._leads.insert_many(docs, session=session)
                for chatbot, claim in claims.items():
                    await claim.add(session, changes[chatbot])

            await self._mongo.transaction(write)

    @store_errors
    async def insert_many(self, *, docs: list[dict[str, Any]]) -> int:
        """Bulk load of documents made by build_lead_document (seeding, benchmarks).

        Bypasses the counters: run ``recount`` for each chatbot afterwards.
        """
        for doc in docs:
            doc.setdefault("_id", ids.new_id(ids.LEAD))
        result = await self._leads.insert_many(docs, ordered=False)
        return len(result.inserted_ids)

    @store_errors
    async def get(self, *, chatbot_id: str, lead_id: str) -> dict:
        return _to_lead(await self._find_lead(chatbot_id, lead_id, FULL_PROJECTION))

    @store_errors
    async def update(self, *, chatbot_id: str, lead_id: str, changes: dict) -> dict:
        """Apply a partial update; the result is the lead exactly as this update left it.

        The lead is read, changed and written in one transaction: a concurrent writer
        makes it conflict and run again on the newer lead, so no update is lost, status
        times never run backwards, and the counters move with the status.

        Updates of one lead that arrive at this process while one is being written are
        committed together, in arrival order, in the next transaction (a group commit):
        each still gets the lead as its own change left it, and 50 concurrent updates
        cost a few transactions instead of 50 conflicting ones.
        """
        if not ids.is_id(ids.LEAD, lead_id):
            raise LeadNotFound()
        return _to_lead(await self._updates.submit(lead_id, (chatbot_id, changes)))

    async def _write_updates(
        self, lead_id: str, batch: list[tuple[str, dict[str, Any]]]
    ) -> list[dict[str, Any] | Exception]:
        """Apply ``batch`` (chatbot id, changes) in order in one transaction."""

        async def write(session: Any) -> list[dict[str, Any] | Exception]:
            current = await self._leads.find_one({"_id": lead_id}, session=session)
            state, outcomes = current, []
            for chatbot_id, changes in batch:
                if state is None or state.get("chatbotId") != chatbot_id:
                    outcomes.append(LeadNotFound())
                    continue
                try:
                    state = apply_update(state, changes, utcnow())
                except ValidationFailed as exc:  # this change alone is refused
                    outcomes.append(exc)
                    continue
                outcomes.append(state)
            if state is not current:
                sets = {k: v for k, v in state.items() if current.get(k, _ABSENT) != v}
                update: dict[str, Any] = {"$set": sets}
                gone = [k for k in current if k not in state]
                if gone:
                    update["$unset"] = dict.fromkeys(gone, "")
                await self._leads.update_one({"_id": lead_id}, update, session=session)
                if state["status"] != current["status"]:
                    # The lead's own chatbot: a request naming another one got a 404.
                    owner = current["chatbotId"]
                    if owner not in claims:
                        claims[owner] = await stack.enter_async_context(self._counters.claim(owner))
                    await claims[owner].add(session, {current["status"]: -1, state["status"]: 1})
            return outcomes

        async with contextlib.AsyncExitStack() as stack:
            claims: dict[str, Claim] = {}
            return await self._mongo.transaction(write)

    @store_errors
    async def delete(self, *, chatbot_id: str, lead_id: str, audit: dict[str, Any]) -> datetime:
        """Remove the lead for good, with its audit record and counters in one commit."""
        if not ids.is_id(ids.LEAD, lead_id):
            raise LeadNotFound()
        deleted_at = utcnow()

        async def write(session: Any) -> None:
            lead = await self._find_lead(chatbot_id, lead_id, {"status": 1}, session=session)
            await self._audit.insert_one(
                {
                    "_id": ids.new_id("aud_"),
                    "action": "lead.delete",
                    "leadId": lead_id,
                    "chatbotId": chatbot_id,
                    "at": deleted_at,
                    **audit,
                },
                session=session,
            )
            await self._leads.delete_one({"_id": lead_id}, session=session)
            await counts.add(session, {"total": -1, lead["status"]: -1})

        async with self._locks.hold(lead_id), self._counters.claim(chatbot_id) as counts:
            await self._mongo.transaction(write)
        return deleted_at

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
    async def explain_list(self, *, chatbot_id: str, query: LeadQuery) -> list[dict[str, Any]]:
        """The server's plans for the queries ``list`` runs for this query."""
        return await self._lister.explain(chatbot_id, query)

    @store_errors
    async def recount(self, *, chatbot_id: str) -> dict[str, Any]:
        """Recompute a chatbot's lead counters from its leads (after a bulk load).

        Counted inside a transaction and written in the same one, so a create or delete
        running meanwhile either is in the count or conflicts and runs again.
        """

        async def work(session: Any) -> dict[str, Any]:
            by_status = {
                status: await self._leads.count_documents(
                    {"chatbotId": chatbot_id, "status": status}, session=session
                )
                for status in STATUSES
            }
            counts = {"total": sum(by_status.values()), "byStatus": by_status}
            await self._counters.replace(session, chatbot_id, counts)
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

    # -- export (the walk itself is in storage/export.py) --------------------------

    async def export(
        self,
        *,
        chatbot_id: str,
        query: LeadQuery,
        explain: list[dict[str, Any]] | None = None,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Every lead matching ``query`` (whose sort is one of EXPORT_SORTS), once, in
        pages as the list shows them: one bounded read per page, and a page may be
        empty. Store failures raise as in every method (a 503). With ``explain``, the
        server's explanation of every read is appended to it."""
        exporter = LeadExporter(self._leads, LIST_PROJECTION, quirks=self._quirks)
        async for docs in exporter.pages(chatbot_id, query, explain=explain):
            yield [_to_lead(doc) for doc in docs]


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
