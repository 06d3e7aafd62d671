"""Listing a chatbot's leads: filters, sorts, pages and cursors, each from an index.

Every query a list sends names the chatbot and is answered from one index that begins
with ``chatbotId``, so a list costs this chatbot's leads, never another tenant's. No
query hints an index. A list runs one of two ways, after the store's quirks
(``quirks.index_only_filters``):

- Plain (MongoDB): one query holds every condition (``$in``, ``$all``, conditions on
  fields outside the chosen index); the server's planner bounds it by an index.
- Index-only (SecantusDB 0.7, which reads the whole collection for anything else):
  each query names only fields of the chosen index, as equalities and at most one range
  (on the index's time or name field). A list of values (several statuses or sources,
  the values a metadata filter matches) becomes one equality read per value (per pair
  of values on ``by_status_source``), merged here in sort order; conditions on fields
  outside the index (another filter, more search words, a date range on the other time
  field) are checked here, on the chatbot's candidates read from the index.

A page sorted on a time field is read in a window back from its start point (now, or
the cursor). The number of matches is known before the page is read, so the first
window is sized to hold the page, and it is widened only when it did not; a cursor
page's window starts at the cursor's own value, so the leads sharing it come in the
same read. Windows narrow the scan and never change the result. Where a limit does not
stop a scan (``quirks.limit_reads_whole_range``), pages sorted oldest first start at the
chatbot's first creation time, and pages sorted by name read windows of names (sized by
``name_position``) from the cursor or the chatbot's lowest or highest name; those
bounds come with the lead counters (leads/counters.py). A window has no bound on its
origin's side but the cursor's, so a stale bound costs reads, never leads.
"""

from __future__ import annotations

import asyncio
import bisect
import builtins
import heapq
import itertools
import operator
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from ..store.client import aggregate
from ..store.quirks import PLAIN, StoreQuirks
from ..timeutil import MILLISECOND, utcnow
from .counters import BY_SOURCE, Bounds
from .indexes import INDEX_FIELDS, choose_lead_index, index_layout
from .queries import SORTS, CursorPosition, LeadPage, LeadQuery
from .rules import SEARCH_PREFIX_MAX, metadata_entry, prefix_upper_bound, word_matches

TIME_FIELDS = ("createdAt", "updatedAt")
NAME_FIELD = "nameSort"
# Up to this many matches (or no more than the page needs), a page is one read of them
# all: a window would save little.
FULL_READ_MAX = 100
# A first window is sized to hold this many times the leads the page needs, were the
# matches spread evenly over the chatbot's span (the time its leads cover): generous for
# a first page, tighter for a deep one, where 4x the leads before the page is most of
# the chatbot (page 499 of 20,000 leads read all of them: 1.6 s on SecantusDB).
WINDOW_SLACK = 4
WINDOW_SLACK_DEEP = 1.25
WINDOW_SLACK_LEADS = 50  # pages needing up to this many leads get the whole slack


def window_slack(target: int) -> float:
    return max(WINDOW_SLACK_DEEP, min(WINDOW_SLACK, WINDOW_SLACK * WINDOW_SLACK_LEADS / target))


# The span assumed for a chatbot until a windowed read has measured it (per process).
DEFAULT_SPAN = timedelta(days=365)
SPANS_KEPT = 10_000
# At least a second: a chatbot capturing leads fast (hundreds a minute) is read a few
# seconds back for its first page, not a whole minute of leads (issue 17, docs/load.md).
WINDOW_MIN = timedelta(seconds=1)
WINDOW_MAX = timedelta(days=365 * 30)
WINDOW_GROWTH = 8  # when a window held nothing
WINDOW_GROWTH_MAX = 64
# A cursor page's read also returns up to this many leads that share the cursor's value
# and that earlier pages showed (the cursor's own lead is one), and drops them.
TIES_READ = 5
READ_BATCH = 100_000  # candidates come back in one batch (the server caps it at 16 MiB)


@dataclass(frozen=True)
class Check:
    """A condition checked here on a candidate: its field is not in the chosen index."""

    field: str
    test: Callable[[Any], bool]

    def __call__(self, doc: dict[str, Any]) -> bool:
        return self.test(doc.get(self.field))


class ListPlan:
    """The conditions of one list query and how they are read.

    ``parts``: the filters read, one per value of the index's equality field when the
    store needs ``$in`` split (their results are merged), else one. ``own``: the query's
    bounds on ``range_field``, kept apart because reads narrow them (cursor, window).
    ``checks``: conditions tested here. ``ordered``: pages are read from the index in
    sort order; otherwise every candidate is read and sorted here.
    """

    def __init__(
        self,
        chatbot_id: str,
        query: LeadQuery,
        quirks: StoreQuirks = PLAIN,
        *,
        index: str | None = None,
    ) -> None:
        """``index``: the index to read (on index-only stores) instead of the one
        ``choose_lead_index`` picks for the query (an export reads by creation time)."""
        self.chatbot_id = chatbot_id
        self.query = query
        self.quirks = quirks
        self.field, self.direction = SORTS[query.sort]
        self.index = index or choose_lead_index(query)
        self.parts: list[dict[str, Any]] = []
        self.checks: list[Check] = []
        self.overlap = False  # whether a lead can match two parts
        self.range_field = self.field
        self.own: dict[str, Any] = {}
        # The chatbot's bounds from its counters, where a scan starts from them.
        self.bounds: Bounds | None = None
        if quirks.index_only_filters:
            self._index_only()
        else:
            self._plain()

    def _plain(self) -> None:
        """One query with every condition; the server's planner picks the index."""
        q = self.query
        base: dict[str, Any] = {"chatbotId": self.chatbot_id}
        more: list[dict[str, Any]] = []
        if q.statuses:
            base["status"] = _one_or_in(q.statuses)
        if q.sources:
            base["source"] = _one_or_in(q.sources)
        if q.email is not None:
            base["emailFolded"] = q.email
        for field, bounds in _date_bounds(q).items():
            if field == self.field:
                self.own = bounds
            else:
                base[field] = bounds
        for position, entries in enumerate(_metadata_entries(q)):
            condition = _one_or_in(entries)
            if position == 0:
                base["metadataIndex"] = condition
            else:
                more.append({"metadataIndex": condition})
        words = _longest_first(q.words)
        if words:
            prefixes = list(dict.fromkeys(w[:SEARCH_PREFIX_MAX] for w in words))
            base["searchPrefixes"] = prefixes[0] if len(prefixes) == 1 else {"$all": prefixes}
            more += [
                {"searchTerms": {"$elemMatch": _prefix_range(w)}}
                for w in words
                if len(w) > SEARCH_PREFIX_MAX
            ]
        if more:
            base["$and"] = more
        self.parts = [base]
        self.ordered = True
        self.windowable = self._windowed_field and self.field in INDEX_FIELDS[self.index]

    @property
    def _windowed_field(self) -> bool:
        """Whether pages sorted on this field are read in windows: the time fields; with
        quirks.limit_reads_whole_range, names too."""
        return self.field in TIME_FIELDS or (
            self.field == NAME_FIELD and self.quirks.limit_reads_whole_range
        )

    def _index_only(self) -> None:
        """Equality reads on the chosen index's fields; everything else checked here."""
        q = self.query
        keys, ranged = index_layout(self.index)
        values: dict[str, list[Any]] = {}
        if q.statuses:
            if "status" in keys:
                values["status"] = list(q.statuses)
            else:
                self.checks.append(Check("status", _one_of(q.statuses)))
        if q.sources:
            if "source" in keys:
                values["source"] = list(q.sources)
            else:
                self.checks.append(Check("source", _one_of(q.sources)))
        if q.email is not None:
            if "emailFolded" in keys:
                values["emailFolded"] = [q.email]
            else:
                self.checks.append(Check("emailFolded", _one_of((q.email,))))
        for field, bounds in _date_bounds(q).items():
            if field == ranged:
                self.own = bounds
            else:
                self.checks.append(Check(field, _within(bounds)))
        for position, entries in enumerate(_metadata_entries(q)):
            if position == 0 and "metadataIndex" in keys:
                values["metadataIndex"] = list(entries)
                self.overlap = len(entries) > 1  # [5, "5"] holds the entries of both
            else:
                self.checks.append(Check("metadataIndex", _holds_any(entries)))
        for position, word in enumerate(_longest_first(q.words)):
            if position == 0 and "searchPrefixes" in keys:
                values["searchPrefixes"] = [word[:SEARCH_PREFIX_MAX]]
                if len(word) <= SEARCH_PREFIX_MAX:
                    continue  # the prefix lookup is the whole condition
            self.checks.append(Check("searchTerms", _begins_a_term(word)))
        # One read per combination of the index's values (several statuses with several
        # sources: each pair); none (a metadata value that is never indexed): no match.
        self.parts = [
            {"chatbotId": self.chatbot_id, **dict(zip(keys, combination, strict=True))}
            for combination in itertools.product(*(values.get(key, []) for key in keys))
        ]
        self.range_field = ranged
        self.ordered = not self.checks and self.field == ranged
        self.windowable = self.ordered and self._windowed_field

    def filter(
        self, part: dict[str, Any], extra: dict[str, Any] | None = None, *, tie: bool = False
    ) -> dict[str, Any]:
        """The filter of one read of ``part``: the query's own bounds narrowed by ``extra``
        (a cursor, a window), or with ``tie`` the leads sharing the cursor's sort value."""
        out = dict(part)
        if tie:
            after = self.query.after
            assert after is not None
            out[self.field] = after.value
            out["_id"] = {"$lt" if self.direction < 0 else "$gt": after.lead_id}
        else:
            bounds = intersect_ranges(self.own, extra or {})
            if bounds:
                out[self.range_field] = bounds
        if self.quirks.exclusive_time_bounds:
            for field in TIME_FIELDS:
                if isinstance(out.get(field), dict):
                    out[field] = _exclusive_bounds(out[field])
        return out

    @property
    def reads_ties(self) -> bool:
        """Whether a cursor page reads the leads sharing the cursor's sort value (they
        come first, in id order): not when the query's own bounds exclude that value."""
        after = self.query.after
        return after is not None and _within(self.own)(after.value)

    @property
    def ties_in_window(self) -> bool:
        """Whether those leads are read with the window (its cursor bound inclusive, the
        leads at the cursor's value that earlier pages showed dropped here) rather than
        apart. Only on the time fields: an inclusive bound at the far end of a range is
        sent as an exclusive one a millisecond further out (quirks.exclusive_time_bounds)."""
        return self.reads_ties and self.field in TIME_FIELDS

    def beyond_cursor(self, doc: dict[str, Any]) -> bool:
        after = self.query.after
        if after is None:
            return True
        position = _position(after.value, after.lead_id)
        key = _position(doc.get(self.field), doc["_id"])
        return key < position if self.direction < 0 else key > position

    def window(self, width: Any, *, with_ties: bool = False) -> tuple[dict[str, Any], bool]:
        """The sort-field range of a read ``width`` wide from the scan origin, beyond any
        cursor (``with_ties``: from the cursor's value on), and whether that read covers
        all that is left (``None`` width: no window). Widths are timedeltas on the time
        fields and spans of name_position on names."""
        extra: dict[str, Any] = {}
        if self.query.after is not None:
            if self.direction < 0:
                op = "$lte" if with_ties else "$lt"
            else:
                op = "$gte" if with_ties else "$gt"
            extra = {op: self.query.after.value}
        origin = self.scan_origin()
        if width is None or origin is None or width > self.window_max:
            return extra, True
        if self.field == NAME_FIELD:
            return self._name_window(extra, origin, width)
        far = self.far_bound()
        if self.direction < 0:
            edge = origin - width
            window, last = {"$gte": edge}, far is not None and edge <= far
        else:
            edge = origin + width
            window, last = {"$lte": edge}, far is not None and edge >= far
        return intersect_ranges(extra, window), last

    def _name_window(
        self, extra: dict[str, Any], origin: int, width: Any
    ) -> tuple[dict[str, Any], bool]:
        """A window of names: from the origin's name to a name about ``width`` further
        (name_edge); the scan's end when that passes the first or last possible name.
        There is no bound on the origin's side but the cursor's: the window holds every
        lead up to its edge whatever the bounds say."""
        start = self._origin_name()
        assert start is not None
        if self.direction < 0:
            far = origin - int(width)
            if far <= 0:
                return extra, True
            return intersect_ranges(extra, {"$gte": name_edge(start, far)}), False
        far = origin + int(width)
        if far >= NAME_TOP:
            return extra, True
        return intersect_ranges(extra, {"$lt": name_edge(start, far)}), False

    def _origin_name(self) -> str | None:
        if self.query.after is not None and isinstance(self.query.after.value, str):
            return self.query.after.value
        if self.bounds is None:
            return None
        return self.bounds.name_low if self.direction > 0 else self.bounds.name_high

    def scan_origin(self) -> Any:
        """Where a windowed read starts, as a position on the sort field (a time, or
        name_position of a name): the nearest of now (for newest first), the cursor, and
        the query's own bound on the sort field; else, where the store needs it
        (quirks.limit_reads_whole_range), the chatbot's own bound from its counters (its
        first creation time for oldest first; its lowest or highest name); None when
        nothing bounds it."""
        if not self.windowable:
            return None
        if self.field == NAME_FIELD:
            name = self._origin_name()
            return None if name is None else name_position(name)
        after = self.query.after.value if self.query.after is not None else None
        if self.direction < 0:
            points = [utcnow(), after, self.own.get("$lt"), self.own.get("$lte")]
            return min(p for p in points if p is not None)
        points = [after, self.own.get("$gt"), self.own.get("$gte")]
        present = [p for p in points if p is not None]
        if present:
            return max(present)
        if self.bounds is not None and self.quirks.limit_reads_whole_range:
            return self.bounds.first_at
        return None

    @property
    def needs_bounds(self) -> bool:
        """Whether the scan starts at the chatbot's bounds (see scan_origin)."""
        if not (self.windowable and self.quirks.limit_reads_whole_range):
            return False
        if self.query.after is not None:
            return False
        if self.field == NAME_FIELD:
            return True
        return self.direction > 0 and not any(op in self.own for op in ("$gt", "$gte"))

    def position(self, value: Any) -> Any:
        """A sort value as a position windows measure (name_position of a name)."""
        if self.field == NAME_FIELD:
            return name_position(value) if isinstance(value, str) else None
        return value if isinstance(value, datetime) else None

    @property
    def default_span(self) -> Any:
        return NAME_SPAN if self.field == NAME_FIELD else DEFAULT_SPAN

    @property
    def window_min(self) -> Any:
        return 1 if self.field == NAME_FIELD else WINDOW_MIN

    @property
    def window_max(self) -> Any:
        return NAME_TOP if self.field == NAME_FIELD else WINDOW_MAX

    def far_bound(self) -> datetime | None:
        """The query's own bound on the sort field at the far end of the scan."""
        if self.field == NAME_FIELD:
            return None
        ops = ("$gte", "$gt") if self.direction < 0 else ("$lt", "$lte")
        return next((self.own[op] for op in ops if op in self.own), None)

    @property
    def sort(self) -> list[tuple[str, int]]:
        return [(self.field, self.direction), ("_id", self.direction)]

    @property
    def counted_by_counters(self) -> bool:
        """Whether `total` can come from the chatbot's own lead counters (no filter but
        status and source)."""
        q = self.query
        return not (q.email is not None or q.metadata or q.words or _date_bounds(q))


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
        self._leads, self._projection = leads, projection
        self._counts = counts  # the chatbot's lead counters (total and by status)
        self._quirks = quirks
        self._max_count = max_count  # 0: counts are always exact
        # (chatbot, sort field) -> the time (or names) its leads span, as a windowed read
        # measured it: sizes the next first window. Only a guess; never changes a result.
        self._spans: dict[tuple[str, str], Any] = {}

    async def list(self, chatbot_id: str, query: LeadQuery) -> LeadPage:
        plan = ListPlan(chatbot_id, query, self._quirks)
        return await self._list(_Reads(self._leads), plan)

    async def explain(self, chatbot_id: str, query: LeadQuery) -> builtins.list[dict[str, Any]]:
        """Runs the list and returns the server's ``explain`` (executionStats) of each
        find and count it sent to the leads, in the order they completed. (The lead
        counters, read through ``counts``, are not among them.)"""
        reads = _Reads(self._leads, explain=True)
        await self._list(reads, ListPlan(chatbot_id, query, self._quirks))
        assert reads.plans is not None
        return reads.plans

    async def _list(self, reads: _Reads, plan: ListPlan) -> LeadPage:
        if not plan.ordered:
            return await self._list_by_candidates(reads, plan)
        counts = None
        if plan.needs_bounds or plan.counted_by_counters:
            # Counts by source only where the total comes from them (a source filter).
            by_source = plan.counted_by_counters and bool(plan.query.sources)
            counts = await self._counts(plan.chatbot_id, by_source=by_source)
            if counts is not None:
                plan.bounds = counts.get("bounds")
        total, exact, counted = await self._total(reads, plan, counts)
        if counted and total == 0:
            docs: list[dict[str, Any]] = []  # just counted: nothing to read
        else:
            docs = await self._page(reads, plan, total)
        return _page_of(docs, total, plan.query, plan.field, total_exact=exact)

    async def _total(
        self, reads: _Reads, plan: ListPlan, counts: dict[str, Any] | None
    ) -> tuple[int, bool, bool]:
        """The number of matching leads, whether it is exact (not cut at the bound), and
        whether it was counted now (rather than read from ``counts``, the counters)."""
        if plan.counted_by_counters and counts is not None:
            total = _counted(counts, plan.query)
            if total is not None:
                return total, True, False
        bound = self._max_count
        filters = [plan.filter(part) for part in plan.parts]
        if plan.overlap:  # a lead can be in two parts: count it once
            found = await asyncio.gather(*(reads.ids(f, limit=bound) for f in filters))
            total = len(set().union(*found))
            sizes = [len(ids) for ids in found]
        else:  # parts are disjoint (one status, source... each)
            sizes = list(await asyncio.gather(*(reads.count(f, limit=bound) for f in filters)))
            total = sum(sizes)
        if bound and any(n >= bound for n in sizes):
            return bound, False, True
        return total, True, True

    async def _page(
        self, reads: _Reads, plan: ListPlan, total: int
    ) -> builtins.list[dict[str, Any]]:
        """The leads of the page, and one more when there is a next page."""
        query = plan.query
        want = query.limit + 1
        if query.after is None:
            skip = (query.page - 1) * query.limit
            docs = await self._windows(reads, plan, total, skip=skip, want=want)
            assert docs is not None
            return docs
        if plan.ties_in_window:
            docs = await self._windows(reads, plan, total, skip=0, want=want, with_ties=True)
            if docs is not None:
                return docs
        found: list[dict[str, Any]] = []
        if plan.reads_ties:  # apart: many leads share the cursor's value, or not a time
            filters = [plan.filter(part, tie=True) for part in plan.parts]
            found, _, _ = await self._merged(reads, plan, filters, skip=0, want=want)
            if len(found) >= want:
                return found
        docs = await self._windows(reads, plan, total, skip=0, want=want - len(found))
        assert docs is not None
        return found + docs

    async def _windows(
        self,
        reads: _Reads,
        plan: ListPlan,
        total: int,
        *,
        skip: int,
        want: int,
        with_ties: bool = False,
    ) -> builtins.list[dict[str, Any]] | None:
        """Up to ``want`` leads after the first ``skip``, read in windows that widen until
        they hold them. ``with_ties``: the windows start at the cursor's own value, and
        the leads there that are not beyond the cursor are dropped; None when more of
        them than TIES_READ filled the read."""
        slack = TIES_READ if with_ties else 0
        width = self._first_width(plan, total, skip + want)
        while True:
            extra, last = plan.window(width, with_ties=with_ties)
            filters = [plan.filter(part, extra) for part in plan.parts]
            docs, seen, whole = await self._merged(
                reads, plan, filters, skip=skip, want=want + slack
            )
            if with_ties:
                docs = [doc for doc in docs if plan.beyond_cursor(doc)]
            if len(docs) >= want:
                if width is not None:
                    self._measured(plan, total, skip + want, docs[want - 1])
                return docs[:want]
            if not whole:  # the read was cut at its limit by leads that were dropped
                return None
            if last:
                return docs
            assert width is not None  # a read without a window is the last
            width = _grow(width, seen, skip + want)

    async def _merged(
        self,
        reads: _Reads,
        plan: ListPlan,
        filters: builtins.list[dict[str, Any]],
        *,
        skip: int,
        want: int,
    ) -> tuple[builtins.list[dict[str, Any]], int, bool]:
        """Up to ``want`` leads after the first ``skip`` in sort order, over all filters;
        how many leads the read saw (0: unknown); and whether it read every match (no
        read was cut at its limit)."""
        if len(filters) == 1:
            docs = await reads.find(
                filters[0], self._projection, sort=plan.sort, skip=skip, limit=want
            )
            return docs, (skip + len(docs) if docs else 0), len(docs) < want
        limit = skip + want
        runs = await asyncio.gather(
            *(reads.find(f, self._projection, sort=plan.sort, limit=limit) for f in filters)
        )
        merged = _merge(runs, plan.field, plan.direction)
        whole = len(merged) <= limit and all(len(run) < limit for run in runs)
        return merged[skip : skip + want], len(merged), whole

    def _first_width(self, plan: ListPlan, total: int, target: int) -> Any:
        """The first window: wide enough to hold ``target`` leads a few times over, were
        the matches spread evenly; None (no window) when there are few matches."""
        if not plan.windowable or total <= max(FULL_READ_MAX, target):
            return None
        origin = plan.scan_origin()
        if origin is None:
            return None
        span = self._spans.get((plan.chatbot_id, plan.field), plan.default_span)
        far = plan.far_bound()
        if far is not None:
            span = min(span, abs(origin - far))
        return max(plan.window_min, span * (window_slack(target) * target / total))

    def _measured(self, plan: ListPlan, total: int, target: int, doc: dict[str, Any]) -> None:
        """Remember the span a full window implies: its ``target``-th lead lay this far
        from the origin, so all ``total`` would lie about ``total / target`` times as far."""
        origin, value = plan.scan_origin(), plan.position(doc.get(plan.field))
        if plan.own or origin is None or value is None:
            return  # a date filter's matches say nothing of the chatbot's span
        key = (plan.chatbot_id, plan.field)
        if key not in self._spans and len(self._spans) >= SPANS_KEPT:
            self._spans.pop(next(iter(self._spans)))
        self._spans[key] = abs(origin - value) * (total / target)

    async def _list_by_candidates(self, reads: _Reads, plan: ListPlan) -> LeadPage:
        """Read every candidate of the chosen index (this chatbot's), keep those passing
        the checks, sort them here, then fetch the page's leads by id."""
        query, field = plan.query, plan.field
        projection = {"_id": 1, field: 1} | {check.field: 1 for check in plan.checks}
        runs = await asyncio.gather(
            *(reads.find(plan.filter(part), projection) for part in plan.parts)
        )
        matches, seen = [], set()
        for run in runs:
            for doc in run:
                if doc["_id"] not in seen and all(check(doc) for check in plan.checks):
                    seen.add(doc["_id"])
                    matches.append(doc)
        reverse = plan.direction < 0
        key = _sort_key(field)
        matches.sort(key=key, reverse=reverse)
        total = len(matches)
        if query.after is not None:
            position = _position(query.after.value, query.after.lead_id)
            beyond = [d for d in matches if (key(d) < position if reverse else key(d) > position)]
            chosen = beyond[: query.limit + 1]
        else:
            start = (query.page - 1) * query.limit
            chosen = matches[start : start + query.limit + 1]
        ids = [d["_id"] for d in chosen]
        docs: list[dict[str, Any]] = []
        if ids:
            found = await reads.find({"_id": {"$in": ids}}, self._projection)
            # The ids came from this chatbot's leads; check again rather than trust it.
            by_id = {d["_id"]: d for d in found if d.get("chatbotId") == plan.chatbot_id}
            docs = [by_id[i] for i in ids if i in by_id]
        return _page_of(docs, total, query, field)


class _Reads:
    """The queries of one list, sent to the leads; with ``explain``, each is explained
    (executionStats) before it runs, and the explanations kept in ``plans``."""

    def __init__(self, leads: Any, *, explain: bool = False) -> None:
        self._leads = leads
        self.plans: list[dict[str, Any]] | None = [] if explain else None

    async def _explain(self, command: dict[str, Any]) -> None:
        if self.plans is not None:
            db = self._leads.database
            self.plans.append(await db.command("explain", command, verbosity="executionStats"))

    async def find(
        self,
        filter_: dict[str, Any],
        projection: dict[str, int],
        *,
        sort: list[tuple[str, int]] | None = None,
        skip: int = 0,
        limit: int = 0,
    ) -> list[dict[str, Any]]:
        command: dict[str, Any] = {"find": self._leads.name, "filter": filter_}
        command["projection"] = projection
        if sort:
            command["sort"] = dict(sort)
        if skip:
            command["skip"] = skip
        if limit:
            command["limit"] = limit
        await self._explain(command)
        cursor = self._leads.find(
            filter_, projection, sort=sort, skip=skip, limit=limit, batch_size=limit or READ_BATCH
        )
        docs: list[dict[str, Any]] = await cursor.to_list(None)
        return docs

    async def ids(self, filter_: dict[str, Any], *, limit: int = 0) -> set[Any]:
        return {doc["_id"] for doc in await self.find(filter_, {"_id": 1}, limit=limit)}

    async def count(self, filter_: dict[str, Any], *, limit: int = 0) -> int:
        # $match + $count rather than count_documents ($group): the same result, and
        # SecantusDB runs it about a third faster.
        pipeline: list[dict[str, Any]] = [{"$match": filter_}]
        if limit:
            pipeline.append({"$limit": limit})
        pipeline.append({"$count": "n"})
        await self._explain({"aggregate": self._leads.name, "pipeline": pipeline, "cursor": {}})
        rows = await aggregate(self._leads, pipeline)
        return rows[0]["n"] if rows else 0


def intersect_ranges(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The range both ``a`` and ``b`` allow ($gt/$gte lower bounds, $lt/$lte upper)."""
    out = dict(a)
    for op, value in b.items():
        side = [o for o in out if _same_side(o, op)]
        if not side:
            out[op] = value
            continue
        (current_op,) = side
        current = out[current_op]
        lower = op in ("$gt", "$gte")
        tighter = value > current if lower else value < current
        stricter = value == current and op in ("$gt", "$lt")
        if tighter or stricter:
            del out[current_op]
            out[op] = value
    return out


def _exclusive_bounds(condition: dict[str, Any]) -> dict[str, Any]:
    """Inclusive time bounds as exclusive ones a millisecond further out.

    Stored times have millisecond precision, so this selects the same leads. SecantusDB
    0.7 drops the leads equal to an inclusive bound at the far end of an index range
    (quirks.exclusive_time_bounds); exclusive bounds are read right.
    """
    out = {}
    for op, value in condition.items():
        if op == "$gte" and isinstance(value, datetime):
            op, value = "$gt", value - MILLISECOND
        elif op == "$lte" and isinstance(value, datetime):
            op, value = "$lt", value + MILLISECOND
        out[op] = value
    return out


def _same_side(a: str, b: str) -> bool:
    lower = ("$gt", "$gte")
    return (a in lower) == (b in lower) and a in ("$gt", "$gte", "$lt", "$lte")


def _grow(width: Any, seen: int, target: int) -> Any:
    """The next window after one that held ``seen`` leads (0: none, or unknown) of the
    ``target`` needed: wide enough for twice what is missing, were they spread evenly."""
    if seen <= 0:
        return width * WINDOW_GROWTH
    return width * min(max(2.0, 2 * target / seen), WINDOW_GROWTH_MAX)


def _merge(runs: list[list[dict[str, Any]]], field: str, direction: int) -> list[dict[str, Any]]:
    """Runs each in sort order, merged into one; a lead found by two runs appears once."""
    key = _sort_key(field)
    merged: list[dict[str, Any]] = []
    for doc in heapq.merge(*runs, key=key, reverse=direction < 0):
        if not merged or merged[-1]["_id"] != doc["_id"]:  # equal keys are adjacent
            merged.append(doc)
    return merged


def _position(value: Any, lead_id: Any) -> tuple[Any, ...]:
    """A sort position that orders like the server: a missing value (null) first."""
    return (value is not None, value if value is not None else 0, lead_id)


def _sort_key(field: str) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    return lambda doc: _position(doc.get(field), doc["_id"])


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
    docs: list[dict[str, Any]],
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


def _date_bounds(query: LeadQuery) -> dict[str, dict[str, Any]]:
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


def _metadata_entries(query: LeadQuery) -> list[tuple[str, ...]]:
    """For each metadata filter, the index entries of the values it matches."""
    return [
        tuple(dict.fromkeys(e for e in (metadata_entry(key, v) for v in values) if e is not None))
        for key, values in query.metadata
    ]


def _one_of(values: tuple[Any, ...]) -> Callable[[Any], bool]:
    allowed = set(values)
    return lambda value: value in allowed


def _holds_any(entries: tuple[str, ...]) -> Callable[[Any], bool]:
    wanted = set(entries)
    return lambda held: isinstance(held, list) and not wanted.isdisjoint(held)


def _begins_a_term(word: str) -> Callable[[Any], bool]:
    return lambda terms: isinstance(terms, list) and word_matches(word, terms)


def _within(bounds: dict[str, Any]) -> Callable[[Any], bool]:
    """Whether a value lies in a range ($gt, $gte, $lt, $lte); a missing value never does."""
    tests = [(_COMPARE[op], bound) for op, bound in bounds.items()]
    return lambda value: (
        not tests or (value is not None and all(compare(value, bound) for compare, bound in tests))
    )


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}


def _longest_first(words: tuple[str, ...]) -> list[str]:
    return sorted(words, key=len, reverse=True)


def _prefix_range(word: str) -> dict[str, Any]:
    upper = prefix_upper_bound(word)
    return {"$gte": word} if upper is None else {"$gte": word, "$lt": upper}


def _one_or_in(values: tuple[Any, ...]) -> Any:
    return values[0] if len(values) == 1 else {"$in": list(values)}


# Name windows. A folded name's place in the name order as a number: its first
# NAME_DIGITS characters, each the rank of its class of characters (0: past the end or
# a control character). Digits, letters a-z, the space and the usual punctuation of
# names are each a class of their own; other characters fall in a few broad classes by
# code point, and the digits stop after one of those (two names that differ only
# within such a class must not be ordered by what follows it). So the number never
# decreases as names increase (strings compare by code point, as the index orders
# them), and a range of names can be sized like a range of times.
_CLASS_STARTS = (
    0x20,  # space
    0x21,
    0x27,  # '
    0x28,
    0x2D,  # -
    0x2E,  # .
    0x2F,
    *range(0x30, 0x3A),  # 0-9
    0x3A,
    *range(0x61, 0x7B),  # a-z
    0x7B,
    0x80,
    0x250,
    0x400,
    0x530,
    0x3000,
    0xA000,
    0xE000,
)
_SINGLE = frozenset(
    rank
    for rank in range(1, len(_CLASS_STARTS))
    if _CLASS_STARTS[rank] - _CLASS_STARTS[rank - 1] == 1
)
NAME_BASE = len(_CLASS_STARTS) + 1
NAME_DIGITS = 12
NAME_TOP = NAME_BASE**NAME_DIGITS
# The span assumed for a chatbot's names until a windowed read has measured it: a-z.
NAME_SPAN = 26 * NAME_BASE ** (NAME_DIGITS - 1)


def _name_ranks(name: str) -> list[int]:
    """The ranks a position is made of: up to NAME_DIGITS, the last one past which
    nothing counts (a broad class, or the end)."""
    ranks = []
    for char in name[:NAME_DIGITS]:
        rank = bisect.bisect_right(_CLASS_STARTS, ord(char))
        ranks.append(rank)
        if rank not in _SINGLE:
            break
    return ranks


def name_position(name: str) -> int:
    ranks = _name_ranks(name)
    position = 0
    for i in range(NAME_DIGITS):
        position = position * NAME_BASE + (ranks[i] if i < len(ranks) else 0)
    return position


def _name_digits(position: int) -> list[int]:
    digits = []
    for _ in range(NAME_DIGITS):
        position, digit = divmod(position, NAME_BASE)
        digits.append(digit)
    return digits[::-1]


def name_edge(origin: str, position: int) -> str:
    """A name at about ``position``: ``origin``'s own characters as long as the digits
    agree with the position's, then the first character of each digit's class. Above
    ``origin`` when the position is, below it when the position is."""
    digits = _name_digits(min(max(position, 0), NAME_TOP - 1))
    ranks = _name_ranks(origin)
    own = ranks + [0] * (NAME_DIGITS - len(ranks))
    same = next((i for i in range(NAME_DIGITS) if digits[i] != own[i]), NAME_DIGITS)
    counted = len(ranks)
    if same >= counted and ranks and ranks[-1] not in _SINGLE:
        # Above the origin but within the class its digits stop at: past that class.
        last = counted - 1
        if ranks[last] < len(_CLASS_STARTS):
            return origin[:last] + chr(_CLASS_STARTS[ranks[last]])
        return origin[:last] + chr(0x10FFFF) * (len(origin) - last + 1)
    edge = origin[:same]
    for digit in digits[same:]:
        if digit == 0:
            break
        edge += chr(_CLASS_STARTS[digit - 1])
    return edge
