"""The lead repository: every query is scoped to one chatbot."""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import datetime
from typing import Any

from pymongo.errors import DuplicateKeyError, PyMongoError, WriteError

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
from ..domain.metadata import apply_merge_patch, metadata_problems, plan_metadata_update
from ..domain.queries import LeadPage, LeadQuery
from ..domain.timeutil import MILLISECOND, to_ms, utcnow
from ..errors import LeadNotFound, ServiceUnavailable, ValidationFailed
from .client import Mongo, store_errors
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
FULL_PROJECTION = {field: 1 for field in PUBLIC_FIELDS} | {"metadataIndex": 1, "metadataVersion": 1}
UPDATE_ATTEMPTS = 50
PATH_NOT_VIABLE = 28  # $set through a value that is not an object


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
        "metadataVersion": 0,
        "statusHistory": [{"status": status, "changedAt": now}],
        "createdAt": now,
        "updatedAt": now,
        **_derived(fields["name"], fields["email"]),
    }


class LeadRepository:
    def __init__(self, mongo: Mongo, *, max_count: int = 0) -> None:
        self._leads = mongo.db["leads"]
        self._audit = mongo.db["audit_log"]
        self._chatbots = mongo.db["chatbots"]
        self._lister = LeadLister(self._leads, self._chatbots, LIST_PROJECTION, max_count=max_count)

    @store_errors
    async def create(self, *, chatbot_id: str, workspace_id: str, fields: dict) -> dict:
        doc = build_lead_document(chatbot_id, workspace_id, fields, utcnow())
        for _ in range(5):  # a 64-bit id collides with vanishing odds; never overwrite one
            doc["_id"] = ids.new_id(ids.LEAD)
            try:
                await self._leads.insert_one(doc)
            except DuplicateKeyError:
                continue
            await self._count(chatbot_id, {"total": 1, doc["status"]: 1})
            return _to_lead(doc)
        raise ServiceUnavailable("Could not allocate a lead id")

    @store_errors
    async def insert_many(self, *, docs: list[dict[str, Any]]) -> int:
        """Bulk load of documents made by build_lead_document (seeding, benchmarks)."""
        for doc in docs:
            doc.setdefault("_id", ids.new_id(ids.LEAD))
        result = await self._leads.insert_many(docs, ordered=False)
        return len(result.inserted_ids)

    @store_errors
    async def get(self, *, chatbot_id: str, lead_id: str) -> dict:
        if not ids.is_id(ids.LEAD, lead_id):
            raise LeadNotFound()
        doc = await self._leads.find_one({"_id": lead_id, "chatbotId": chatbot_id}, FULL_PROJECTION)
        if doc is None:
            raise LeadNotFound()
        return _to_lead(doc)

    @store_errors
    async def update(self, *, chatbot_id: str, lead_id: str, changes: dict) -> dict:
        """Apply a partial update atomically; concurrent updates never lose each other.

        The update is planned from the stored lead and guarded by what the plan assumed
        (its status, the structure of merged metadata, the name and email that search
        terms derive from). When a concurrent writer broke an assumption the guard fails,
        the lead is read again and the update planned again.
        """
        if not ids.is_id(ids.LEAD, lead_id):
            raise LeadNotFound()
        for attempt in range(UPDATE_ATTEMPTS):
            current = await self._leads.find_one({"_id": lead_id, "chatbotId": chatbot_id})
            if current is None:
                raise LeadNotFound()
            filter_, update = self._plan_update(current, changes)
            try:
                # update_one, then a read: findAndModify skips the _id fast path on some
                # MongoDB-wire servers and costs a scan there.
                matched = (await self._leads.update_one(filter_, update)).matched_count
            except WriteError as exc:
                if exc.code != PATH_NOT_VIABLE:
                    raise
                matched = 0  # metadata changed shape under us: plan again
            if matched:
                new_status = changes.get("status", current["status"])
                if new_status != current["status"]:  # the filter held the old status
                    await self._count(chatbot_id, {current["status"]: -1, new_status: 1})
                doc = await self._leads.find_one(
                    {"_id": lead_id, "chatbotId": chatbot_id}, FULL_PROJECTION
                )
                if doc is None:  # deleted right after this update
                    raise LeadNotFound()
                if "metadata" in changes:
                    await self._refresh_metadata_index(doc)
                return _to_lead(doc)
            await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))  # noqa: S311 - jitter
        raise ServiceUnavailable("The lead is being changed too often; retry")

    async def _refresh_metadata_index(self, doc: dict) -> None:
        """Bring ``metadataIndex`` in line with the metadata this update produced.

        Merges of different keys run concurrently without conflict, so the index is
        derived afterwards from the merged document. The write is guarded by the
        metadata version: if a later merge got in first, that merge refreshes instead.
        """
        entries = metadata_index_entries(doc.get("metadata") or {})
        if entries != doc.get("metadataIndex"):
            await self._leads.update_one(
                {"_id": doc["_id"], "metadataVersion": doc.get("metadataVersion")},
                {"$set": {"metadataIndex": entries}},
            )

    def _plan_update(self, current: dict, changes: dict) -> tuple[dict, dict]:
        filter_: dict[str, Any] = {"_id": current["_id"], "chatbotId": current["chatbotId"]}
        sets: dict[str, Any] = {}
        unsets: dict[str, str] = {}
        push: dict[str, Any] = {}
        inc: dict[str, int] = {}
        guards: list[dict] = []
        now = utcnow()

        for field in ("name", "email", "phone", "source"):
            if field in changes:
                sets[field] = changes[field]
        if "name" in changes or "email" in changes:
            name = changes.get("name", current["name"])
            email = changes.get("email", current["email"])
            sets.update(_derived(name, email))
            # Search terms derive from both: the one not sent must still be as read.
            for field in ("name", "email"):
                if field not in changes:
                    filter_[field] = current[field]
        if "status" in changes:
            filter_["status"] = current["status"]
            if changes["status"] != current["status"]:
                sets["status"] = changes["status"]
                push["statusHistory"] = {
                    "$each": [{"status": changes["status"], "changedAt": now}],
                    "$slice": -STATUS_HISTORY_LIMIT,
                }
        if "metadata" in changes:
            stored = current.get("metadata") or {}
            merged = apply_merge_patch(stored, changes["metadata"])
            problems = metadata_problems(merged)
            if problems:
                raise ValidationFailed("Metadata after the merge breaks a limit", details=problems)
            plan = plan_metadata_update(stored, changes["metadata"])
            sets.update(plan.sets)
            unsets.update({path: "" for path in plan.unsets})
            guards.extend(plan.guards)
            inc["metadataVersion"] = 1
        for guard in guards:  # path conditions at the top level (no $and: planners
            for path, condition in guard.items():  # keep the _id fast path then)
                filter_.setdefault(path, {}).update(condition)

        # updatedAt always moves forward, even within one millisecond of the last update.
        previous = current.get("updatedAt")
        updated_at = max(now, to_ms(previous) + MILLISECOND) if previous else now
        update: dict[str, Any] = {"$max": {"updatedAt": updated_at}}
        if sets:
            update["$set"] = sets
        if unsets:
            update["$unset"] = unsets
        if push:
            update["$push"] = push
        if inc:
            update["$inc"] = inc
        return filter_, update

    @store_errors
    async def delete(self, *, chatbot_id: str, lead_id: str, audit: dict[str, Any]) -> datetime:
        """Remove the lead for good; the audit record is written first, so none is missed."""
        if not ids.is_id(ids.LEAD, lead_id):
            raise LeadNotFound()
        if (
            await self._leads.find_one({"_id": lead_id, "chatbotId": chatbot_id}, {"_id": 1})
            is None
        ):
            raise LeadNotFound()
        deleted_at = utcnow()
        record_id = ids.new_id("aud_")
        await self._audit.insert_one(
            {
                "_id": record_id,
                "action": "lead.delete",
                "leadId": lead_id,
                "chatbotId": chatbot_id,
                "at": deleted_at,
                **audit,
            }
        )
        # delete_one guarded by the status just read (not findAndModify: see update), so
        # the counters move for the status the lead really had.
        for _ in range(UPDATE_ATTEMPTS):
            lead = await self._leads.find_one(
                {"_id": lead_id, "chatbotId": chatbot_id}, {"status": 1}
            )
            if lead is None:  # a concurrent delete won: it has its own record
                await self._audit.delete_one({"_id": record_id})
                raise LeadNotFound()
            result = await self._leads.delete_one(
                {"_id": lead_id, "chatbotId": chatbot_id, "status": lead["status"]}
            )
            if result.deleted_count == 1:
                await self._count(chatbot_id, {"total": -1, lead["status"]: -1})
                return deleted_at
        await self._audit.delete_one({"_id": record_id})  # nothing was deleted
        raise ServiceUnavailable("The lead is being changed too often; retry")

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
        """Recompute a chatbot's lead counters from its leads (after a bulk load)."""
        by_status = {
            status: await self._leads.count_documents({"chatbotId": chatbot_id, "status": status})
            for status in STATUSES
        }
        counts = {"total": sum(by_status.values()), "byStatus": by_status}
        await self._chatbots.update_one({"_id": chatbot_id}, {"$set": {"leadCounts": counts}})
        return counts

    async def _count(self, chatbot_id: str, changes: dict[str, int]) -> None:
        """Move a chatbot's lead counters after a create, delete or status change."""
        inc = {f"leadCounts.byStatus.{s}": n for s, n in changes.items() if s != "total"}
        if "total" in changes:
            inc["leadCounts.total"] = changes["total"]
        try:
            await self._chatbots.update_one({"_id": chatbot_id}, {"$inc": inc})
        except PyMongoError:  # the lead write stands; `admin recount` repairs the counters
            log.exception("lead counters of %s not updated: %s", chatbot_id, inc)
