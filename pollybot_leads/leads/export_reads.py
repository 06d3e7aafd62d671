"""Exporting a chatbot's leads: every match once, in creation order, in bounded reads.

**Exactly once while others write.** An export walks one immutable order, creation
time then id (``createdAt``, ``_id``), newest or oldest first, and each read continues
strictly after the last lead the previous read returned (a keyset). A lead's place in
that order never changes, so a lead that exists for the whole export and matches the
filters throughout lies in exactly one read's range and is returned exactly once,
whatever is created, changed or deleted meanwhile; no lead is ever returned twice. (An
order on a mutable field, such as ``updatedAt`` or the name, could move a lead behind
the walk or ahead of it while it runs: exports do not offer one.)

Each read is one query of this chatbot's leads, answered from an index that begins with
``chatbotId`` (as lists are, see listing.py), so no read costs another tenant's data:

- On MongoDB one query holds every filter; the server bounds it by an index.
- On an index-only store (SecantusDB 0.7, ``quirks.index_only_filters``) the read names
  only the fields of one index ending in ``createdAt``, and the other conditions are
  checked here on the candidates. Where a list would split a filter with several values
  (``$in``) into one read per value, an export reads the chatbot's creation-time index
  instead and checks every filter here: separate reads per value would be taken at
  different moments, and a lead moving between two values (``new`` to ``contacted``)
  while ``status=new,contacted`` is exported could be missed.

**Bounded reads.** SecantusDB reads a query's whole index range before it applies the
limit, so "the next 500 after here" would cost everything after here, every time. Each
read is therefore bounded by a window of creation times as well as the limit, sized
from what the previous read found (the span that held a full read, or wider after a
sparse one), so that every read examines about one read's worth of candidates. An
oldest-first export first finds the oldest candidate (one indexed query on MongoDB; on
SecantusDB, probes of slices of time from 1900 on, each cheap while it is empty).

**Steps.** :meth:`LeadExporter.pages` yields after every read (a page, possibly empty
when no candidate of a window matched), so its caller can give each read a deadline of
its own and stop between any two.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..store.client import store_errors
from ..store.quirks import PLAIN, StoreQuirks
from ..timeutil import MILLISECOND, to_ms, utcnow
from .indexes import choose_lead_index, index_layout
from .listing import ListPlan, _Reads
from .queries import LeadQuery

EXPORT_SORTS = ("-createdAt", "createdAt")
READ_LIMIT = 500  # leads per read (and so per page) at most, besides a few ties
FIRST_WIDTH = timedelta(hours=1)  # the first window, before anything is known
MIN_WIDTH = timedelta(seconds=1)
MAX_WIDTH = timedelta(days=365 * 200)
GROWTH_MAX = 8  # a window after an empty one is at most this many times as wide
TARGET_SHARE = 0.75  # a window is sized to hold about this share of a full read
# No lead is created before this (the earliest time a filter may name): a window that
# reaches past it is the last, and reads everything older, unbounded.
FLOOR = datetime(1900, 1, 1, tzinfo=UTC)
# Leads created this long after the export began are not read: a newest-first export
# starts here, an oldest-first one stops here (a lead created during the export may or
# may not be in it; the slack covers clocks of other servers a little behind ours).
CLOCK_SLACK = timedelta(minutes=1)
# An oldest-first export on SecantusDB finds its start by probing the first 1/SLICES of
# the time left: an empty probe costs nothing, the first one that is not costs at most
# the candidates of that slice.
START_SLICES = 8
SORT_FIELD = "createdAt"


def export_plan(chatbot_id: str, query: LeadQuery, quirks: StoreQuirks = PLAIN) -> ListPlan:
    """The plan of an export's reads: one read per step, of one index ending in createdAt."""
    if query.sort not in EXPORT_SORTS:
        raise ValueError(f"exports walk creation order, not {query.sort!r}")
    if not quirks.index_only_filters:
        return ListPlan(chatbot_id, query, quirks)
    index = choose_lead_index(query)
    if index_layout(index)[1] != SORT_FIELD:  # by_updated: walk by creation time
        index = "by_created"
    plan = ListPlan(chatbot_id, query, quirks, index=index)
    if len(plan.parts) > 1:  # one read per value: not one moment (see the module's note)
        plan = ListPlan(chatbot_id, query, quirks, index="by_created")
    return plan


@dataclass
class _Walk:
    """Where an export stands: every lead before ``(time, lead_id)`` in the walk's order
    has been read; with ``lead_id`` None, every lead at ``time`` too. ``ties``: how many
    leads at ``time`` were read (a read from ``time`` on returns them again)."""

    time: datetime
    lead_id: str | None = None
    ties: int = 0
    width: timedelta = FIRST_WIDTH
    done: bool = False


class LeadExporter:
    """Runs exports for the lead repository (which owns the collection)."""

    def __init__(self, leads: Any, projection: dict[str, int], *, quirks: StoreQuirks = PLAIN):
        self._leads, self._projection = leads, projection
        self._quirks = quirks

    async def pages(
        self,
        chatbot_id: str,
        query: LeadQuery,
        *,
        explain: list[dict[str, Any]] | None = None,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """The matching leads (stored documents), in pages of at most about READ_LIMIT;
        one read per page, and a page may be empty. With ``explain``, the server's
        explanation (executionStats) of every read is appended to it."""
        plan = export_plan(chatbot_id, query, self._quirks)
        reads = _Reads(self._leads, explain=explain is not None)
        if explain is not None:
            reads.plans = explain
        if not plan.parts:  # a metadata value that is never indexed: nothing matches
            return
        projection = self._projection | {check.field: 1 for check in plan.checks}
        ceiling = query.created_before or utcnow() + CLOCK_SLACK
        if plan.direction < 0:
            walk = _Walk(ceiling)
        else:
            start = query.created_after or await self._oldest(reads, plan, ceiling)
            if start is None:
                return
            walk = _Walk(start - MILLISECOND)  # every lead after it: from start on
        while not walk.done:
            docs = await self._step(reads, plan, walk, projection, ceiling)
            yield [doc for doc in docs if all(check(doc) for check in plan.checks)]

    async def _step(
        self,
        reads: _Reads,
        plan: ListPlan,
        walk: _Walk,
        projection: dict[str, int],
        ceiling: datetime,
    ) -> list[dict[str, Any]]:
        """One read: the candidates after ``walk`` in the next window; moves ``walk`` on."""
        newest_first = plan.direction < 0
        if newest_first:
            near = {"$lte" if walk.lead_id else "$lt": walk.time}
            edge = to_ms(walk.time - walk.width)
            floor = plan.query.created_after or FLOOR
            last = edge <= floor  # the query's own bound (or none) ends the read
            far = {} if last else {"$gte": edge}
        else:
            near = {"$gte" if walk.lead_id else "$gt": walk.time}
            edge = to_ms(walk.time + walk.width)
            last = edge >= ceiling
            far = {"$lt": ceiling} if last else {"$lte": edge}
        limit = READ_LIMIT + walk.ties
        found = await self._find(
            reads,
            plan.filter(plan.parts[0], near | far),
            projection,
            sort=plan.sort,
            limit=limit,
        )
        beyond = [doc for doc in found if _beyond(doc, walk, newest_first)]
        if len(found) < limit:  # the whole window was read
            if last:
                walk.done = True
            walk.time, walk.lead_id, walk.ties = edge, None, 0
            share = len(beyond) / (READ_LIMIT * TARGET_SHARE)
            growth = GROWTH_MAX if share < 1 / GROWTH_MAX else max(1.0, 1 / share)
            walk.width = min(MAX_WIDTH, walk.width * growth)
            return beyond
        if not beyond:  # a full read of leads already seen (many share one time): read more
            walk.ties += READ_LIMIT
            return []
        end = beyond[-1]
        at_end = sum(1 for doc in beyond if doc[SORT_FIELD] == end[SORT_FIELD])
        walk.ties = at_end + (walk.ties if end[SORT_FIELD] == walk.time else 0)
        walk.width = max(MIN_WIDTH, abs(walk.time - end[SORT_FIELD]))  # held a full read
        walk.time, walk.lead_id = end[SORT_FIELD], end["_id"]
        return beyond

    async def _oldest(self, reads: _Reads, plan: ListPlan, ceiling: datetime) -> datetime | None:
        """The creation time of the oldest candidate before ``ceiling``; None if none."""

        async def first(bounds: dict[str, Any]) -> datetime | None:
            docs = await self._find(
                reads,
                plan.filter(plan.parts[0], bounds),
                {SORT_FIELD: 1},
                sort=[(SORT_FIELD, 1), ("_id", 1)],
                limit=1,
            )
            return docs[0][SORT_FIELD] if docs else None

        if not self._quirks.index_only_filters:
            return await first({"$lt": ceiling})  # the index's first key
        # SecantusDB reads all of a range to answer limit 1: probe thin slices of time
        # first. Empty ones cost next to nothing; the first that is not holds the oldest.
        oldest = await first({"$lt": FLOOR})
        low = FLOOR
        while oldest is None and low < ceiling:
            high = (
                ceiling
                if ceiling - low <= MIN_WIDTH
                else to_ms(low + (ceiling - low) / START_SLICES)
            )
            oldest = await first({"$gte": low, "$lt": high})
            low = high
        return oldest

    @store_errors
    async def _find(
        self,
        reads: _Reads,
        filter_: dict[str, Any],
        projection: dict[str, int],
        *,
        sort: list[tuple[str, int]],
        limit: int,
    ) -> list[dict[str, Any]]:
        return await reads.find(filter_, projection, sort=sort, limit=limit)


def _beyond(doc: dict[str, Any], walk: _Walk, newest_first: bool) -> bool:
    """Whether ``doc`` comes after the walk's position (not read before)."""
    if walk.lead_id is None:
        return True  # the read's own bound excludes the leads at ``walk.time``
    key, position = (doc[SORT_FIELD], doc["_id"]), (walk.time, walk.lead_id)
    return key < position if newest_first else key > position
