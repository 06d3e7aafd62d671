"""The lead repository: every query is scoped to one chatbot."""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError, WriteError

from ..domain import ids
from ..domain.leads import (
    DEFAULT_STATUS,
    STATUS_HISTORY_LIMIT,
    fold,
    prefix_upper_bound,
    search_terms,
)
from ..domain.metadata import apply_merge_patch, metadata_problems, plan_metadata_update
from ..domain.queries import SORTS, CursorPosition, LeadPage, LeadQuery
from ..domain.timeutil import MILLISECOND, to_ms, utcnow
from ..errors import LeadNotFound, ServiceUnavailable, ValidationFailed
from .client import Mongo, store_errors
from .indexes import choose_lead_index

log = logging.getLogger(__name__)

PUBLIC_FIELDS = (
    "chatbotId", "workspaceId", "name", "email", "phone", "source", "status",
    "metadata", "statusHistory", "createdAt", "updatedAt",
)
LIST_PROJECTION = {field: 1 for field in PUBLIC_FIELDS if field != "statusHistory"} | {
    "nameSort": 1
}
FULL_PROJECTION = {field: 1 for field in PUBLIC_FIELDS} | {"nameSort": 1}
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
    return {
        "nameSort": fold(name),
        "emailFolded": fold(email),
        "searchTerms": search_terms(name, email),
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
        "statusHistory": [{"status": status, "changedAt": now}],
        "createdAt": now,
        "updatedAt": now,
        **_derived(fields["name"], fields["email"]),
    }


class LeadRepository:
    def __init__(self, mongo: Mongo) -> None:
        self._leads = mongo.db["leads"]
        self._audit = mongo.db["audit_log"]

    @store_errors
    async def create(self, *, chatbot_id: str, workspace_id: str, fields: dict) -> dict:
        doc = build_lead_document(chatbot_id, workspace_id, fields, utcnow())
        for _ in range(5):  # a 64-bit id collides with vanishing odds; never overwrite one
            doc["_id"] = ids.new_id(ids.LEAD)
            try:
                await self._leads.insert_one(doc)
            except DuplicateKeyError:
                continue
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
        doc = await self._leads.find_one(
            {"_id": lead_id, "chatbotId": chatbot_id}, FULL_PROJECTION
        )
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
                doc = await self._leads.find_one_and_update(
                    filter_, update, projection=FULL_PROJECTION,
                    return_document=ReturnDocument.AFTER,
                )
            except WriteError as exc:
                if exc.code != PATH_NOT_VIABLE:
                    raise
                doc = None  # metadata changed shape under us: plan again
            if doc is not None:
                return _to_lead(doc)
            await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))
        raise ServiceUnavailable("The lead is being changed too often; retry")

    def _plan_update(self, current: dict, changes: dict) -> tuple[dict, dict]:
        filter_: dict[str, Any] = {"_id": current["_id"], "chatbotId": current["chatbotId"]}
        sets: dict[str, Any] = {}
        unsets: dict[str, str] = {}
        push: dict[str, Any] = {}
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
        if guards:
            filter_["$and"] = guards

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
        return filter_, update

    @store_errors
    async def delete(
        self, *, chatbot_id: str, lead_id: str, audit: dict[str, Any]
    ) -> datetime:
        """Remove the lead for good; the audit record is written first, so none is missed."""
        if not ids.is_id(ids.LEAD, lead_id):
            raise LeadNotFound()
        found = await self._leads.find_one({"_id": lead_id, "chatbotId": chatbot_id}, {"_id": 1})
        if found is None:
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
        result = await self._leads.delete_one({"_id": lead_id, "chatbotId": chatbot_id})
        if result.deleted_count != 1:  # a concurrent delete won: it has its own record
            await self._audit.delete_one({"_id": record_id})
            raise LeadNotFound()
        return deleted_at

    def _find_spec(self, chatbot_id: str, query: LeadQuery) -> dict[str, Any]:
        """The find a list query runs: filter, sort, index hint, skip and limit."""
        field, direction = SORTS[query.sort]
        page_filter = self._filter(chatbot_id, query)
        skip = (query.page - 1) * query.limit
        if query.after is not None:
            op = "$lt" if direction < 0 else "$gt"
            value = query.after.value
            page_filter["$or"] = [
                {field: {op: value}},
                {field: value, "_id": {op: query.after.lead_id}},
            ]
            skip = 0
        return {
            "filter": page_filter,
            "sort": {field: direction, "_id": direction},
            "hint": choose_lead_index(query),
            "skip": skip,
            "limit": query.limit + 1,  # one more tells whether there is a next page
        }

    @store_errors
    async def list(self, *, chatbot_id: str, query: LeadQuery) -> LeadPage:
        spec = self._find_spec(chatbot_id, query)
        cursor = self._leads.find(
            spec["filter"], LIST_PROJECTION, sort=list(spec["sort"].items()),
            skip=spec["skip"], limit=spec["limit"], hint=spec["hint"],
        )
        docs = await cursor.to_list(length=spec["limit"])
        has_next = len(docs) > query.limit
        docs = docs[: query.limit]
        total = await self._leads.count_documents(
            self._filter(chatbot_id, query), hint=spec["hint"]
        )
        last = None
        if docs:
            field = SORTS[query.sort][0]
            last = CursorPosition(query.sort, docs[-1].get(field), docs[-1]["_id"])
        return LeadPage([_to_lead(d) for d in docs], total, has_next, last)

    @store_errors
    async def explain_list(self, *, chatbot_id: str, query: LeadQuery) -> dict[str, Any]:
        """The server's query plan for a list query, exactly as ``list`` would run it."""
        spec = self._find_spec(chatbot_id, query)
        command = {"find": self._leads.name, **spec}
        return await self._leads.database.command("explain", command, verbosity="queryPlanner")

    def _filter(self, chatbot_id: str, query: LeadQuery) -> dict[str, Any]:
        filter_: dict[str, Any] = {"chatbotId": chatbot_id}
        if query.statuses:
            filter_["status"] = _one_or_in(query.statuses)
        if query.sources:
            filter_["source"] = _one_or_in(query.sources)
        if query.email is not None:
            filter_["emailFolded"] = query.email
        for field, low, high in (
            ("createdAt", query.created_after, query.created_before),
            ("updatedAt", query.updated_after, query.updated_before),
        ):
            bounds = {}
            if low is not None:
                bounds["$gte"] = low
            if high is not None:
                bounds["$lt"] = high
            if bounds:
                filter_[field] = bounds
        for key, values in query.metadata:
            filter_[f"metadata.{key}"] = _one_or_in(values)
        if query.words:
            # Each word is a prefix range over the terms. $elemMatch makes one term meet
            # both bounds (on an array each bound could otherwise be met by another term)
            # and lets the index bound the scan to the range.
            ranges = [{"searchTerms": {"$elemMatch": _prefix_range(w)}} for w in query.words]
            if len(ranges) == 1:
                filter_.update(ranges[0])
            else:
                filter_["$and"] = ranges
        return filter_


def _prefix_range(word: str) -> dict[str, Any]:
    upper = prefix_upper_bound(word)
    if upper is None:
        return {"$gte": word}
    return {"$gte": word, "$lt": upper}


def _one_or_in(values: tuple) -> Any:
    return values[0] if len(values) == 1 else {"$in": list(values)}
