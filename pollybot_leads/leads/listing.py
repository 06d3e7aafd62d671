"""Listing a chatbot's leads: what a list reads, and its page.

A list query (leads/queries.py) becomes conditions on the stored lead's fields
(store/conditions.py) read on the index its most selective filter belongs to, scoped to
the chatbot; store/plans.py shapes the queries for the store at hand and
store/paging.py reads the page. The lead counters (leads/counters.py) give ``total``
when a list filters by status and source only, and the chatbot's first creation time
and lowest and highest names, where a scan starts from them (``plan.needs_extent``).
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable
from typing import Any, Protocol

from ..store.conditions import AllOf, AnyBetween, Between, Condition, OneOf
from ..store.paging import Pager
from ..store.plans import STRING, TIME, Extent, IndexLayout, ReadPlan
from ..store.quirks import PLAIN, StoreQuirks
from ..store.ranges import Cursor
from ..store.reads import Reads
from .counters import BY_SOURCE, Bounds
from .indexes import choose_lead_index, index_layout
from .queries import SORTS, CursorPosition, LeadPage, LeadQuery
from .rules import SEARCH_PREFIX_MAX, metadata_entry, prefix_upper_bound

NAME_FIELD = "nameSort"


def lead_index(name: str) -> IndexLayout:
    keys, ranged = index_layout(name)
    return IndexLayout(name, keys, ranged)


def lead_conditions(query: LeadQuery) -> builtins.list[Condition]:
    """The query's filters as conditions on the stored lead (the chatbot aside)."""
    out: builtins.list[Condition] = []
    if query.statuses:
        out.append(OneOf("status", query.statuses))
    if query.sources:
        out.append(OneOf("source", query.sources))
    if query.email is not None:
        out.append(OneOf("emailFolded", (query.email,)))
    if query.phone is not None:
        out.append(OneOf("phoneKey", (query.phone,)))
    if query.external_id is not None:
        out.append(OneOf("externalId", (query.external_id,)))
    out += [Between(field, bounds) for field, bounds in date_bounds(query).items()]
    # A metadata filter matches the index entries of the values it names: one lead's
    # entries can hold several of them ([5, "5"]).
    out += [OneOf("metadataIndex", entries, array=True) for entries in metadata_entries(query)]
    words = sorted(query.words, key=len, reverse=True)  # the longest is the most selective
    if words:
        prefixes = tuple(dict.fromkeys(w[:SEARCH_PREFIX_MAX] for w in words))
        # Holding a prefix is beginning a term: checked on the terms (fewer to read).
        each = tuple(AnyBetween("searchTerms", _prefix_range(p)) for p in prefixes)
        out.append(AllOf("searchPrefixes", prefixes, each))
        # A word longer than the kept prefixes must also begin one of the whole terms.
        out += [
            AnyBetween("searchTerms", _prefix_range(w)) for w in words if len(w) > SEARCH_PREFIX_MAX
        ]
    return out


def lead_plan(chatbot_id: str, query: LeadQuery, quirks: StoreQuirks = PLAIN) -> ReadPlan:
    """The plan of a list: the chatbot's leads matching ``query``, on the index
    ``choose_lead_index`` picks."""
    field, direction = SORTS[query.sort]
    after = None if query.after is None else Cursor(query.after.value, query.after.lead_id)
    return ReadPlan(
        {"chatbotId": chatbot_id},
        lead_conditions(query),
        sort=(field, direction),
        kind=STRING if field == NAME_FIELD else TIME,
        index=lead_index(choose_lead_index(query)),
        after=after,
        quirks=quirks,
    )


class CountsReader(Protocol):
    """Reads a chatbot's lead counters (LeadCounters.read), by source when asked."""

    def __call__(self, chatbot_id: str, *, by_source: bool) -> Awaitable[dict[str, Any] | None]: ...


class LeadLister:
    """Runs list queries for the lead repository (which owns the collections)."""

    def __init__(
        self,
        leads: Any,
        projection: dict[str, int],
        *,
        counts: CountsReader,
        quirks: StoreQuirks = PLAIN,
        max_count: int = 0,
    ) -> None:
        self._leads = leads
        self._counts = counts  # the chatbot's lead counters (total and by status)
        self._quirks = quirks
        self._max_count = max_count  # 0: counts are always exact
        self._pager = Pager(projection)

    def plan(self, chatbot_id: str, query: LeadQuery) -> ReadPlan:
        return lead_plan(chatbot_id, query, self._quirks)

    async def list(self, chatbot_id: str, query: LeadQuery) -> LeadPage:
        return await self._list(Reads(self._leads), self.plan(chatbot_id, query), query)

    async def explain(self, chatbot_id: str, query: LeadQuery) -> builtins.list[dict[str, Any]]:
        """Runs the list and returns the server's ``explain`` (executionStats) of each
        find and count it sent to the leads, in the order they completed. (The lead
        counters, read through ``counts``, are not among them.)"""
        plans: builtins.list[dict[str, Any]] = []
        await self._list(Reads(self._leads, plans), self.plan(chatbot_id, query), query)
        return plans

    async def _list(self, reads: Reads, plan: ReadPlan, query: LeadQuery) -> LeadPage:
        chatbot_id = plan.scope["chatbotId"]
        counted = counted_by_counters(query)

        async def count() -> tuple[int, bool, bool]:
            counts = None
            if plan.needs_extent or counted:
                # Counts by source only where the total comes from them (a source filter).
                by_source = counted and bool(query.sources)
                counts = await self._counts(chatbot_id, by_source=by_source)
                if counts is not None:
                    plan.extent = _extent(counts.get("bounds"), plan.field)
            if counted and counts is not None:
                total = _counted(counts, query)
                if total is not None:
                    return total, True, False
            total, exact = await self._pager.count(reads, plan, bound=self._max_count)
            return total, exact, True

        page = await self._pager.read(reads, plan, page=query.page, limit=query.limit, count=count)
        return _page_of(page.docs, page.total, query, plan.field, total_exact=page.exact)


def counted_by_counters(query: LeadQuery) -> bool:
    """Whether `total` can come from the chatbot's own lead counters (no filter but
    status and source)."""
    q = query
    equalities = (q.email, q.phone, q.external_id)
    return not (any(v is not None for v in equalities) or q.metadata or q.words or date_bounds(q))


def _extent(bounds: Bounds | None, field: str) -> Extent | None:
    """The chatbot's extent on a sort field, from the bounds its counters keep: its first
    creation time (no lead was updated before it either), or its lowest and highest names."""
    if bounds is None:
        return None
    if field == NAME_FIELD:
        return Extent(bounds.name_low, bounds.name_high)
    return Extent(bounds.first_at)


def _counted(counts: dict[str, Any], query: LeadQuery) -> int | None:
    """The matches of a list filtered by status and source only, from the chatbot's
    counters; None where they do not count by source (shards from before they did)."""
    statuses = tuple(dict.fromkeys(query.statuses))
    if not query.sources:
        if not statuses:
            return int(counts.get("total", 0))
        by_status = counts.get("byStatus", {})
        return int(sum(by_status.get(s, 0) for s in statuses))
    by_source = counts.get(BY_SOURCE)
    if by_source is None:
        return None
    total = 0
    for source in dict.fromkeys(query.sources):
        held = by_source.get(source, {})
        total += sum(held.get(s, 0) for s in statuses) if statuses else sum(held.values())
    return total


def _page_of(
    docs: builtins.list[dict[str, Any]],
    total: int,
    query: LeadQuery,
    field: str,
    *,
    total_exact: bool = True,
) -> LeadPage:
    has_next = len(docs) > query.limit
    docs = docs[: query.limit]
    last = None
    if docs:
        last = CursorPosition(query.sort, docs[-1].get(field), docs[-1]["_id"])
    return LeadPage(docs, total, has_next, last, total_exact)


def date_bounds(query: LeadQuery) -> dict[str, dict[str, Any]]:
    """The query's ranges on the time fields: after inclusive, before exclusive."""
    out = {}
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
            out[field] = bounds
    return out


def metadata_entries(query: LeadQuery) -> builtins.list[tuple[str, ...]]:
    """For each metadata filter, the index entries of the values it matches."""
    return [
        tuple(dict.fromkeys(e for e in (metadata_entry(key, v) for v in values) if e is not None))
        for key, values in query.metadata
    ]


def _prefix_range(word: str) -> dict[str, Any]:
    upper = prefix_upper_bound(word)
    return {"$gte": word} if upper is None else {"$gte": word, "$lt": upper}
