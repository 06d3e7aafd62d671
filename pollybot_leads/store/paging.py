"""Reading one page of a plan (store/plans.py): by page number or after a cursor, in
windows of the sort field that narrow the scan and never change the result.

A page sorted on a time field is read in a window back from its start point (now, or
the cursor). The number of matches is known before the page is read, so the first
window is sized to hold the page, and it is widened only when it did not; a cursor
page's window starts at the cursor's own value, so the documents sharing it come in the
same read. Where a limit does not stop a scan, pages sorted oldest first or on a string
field start at the scope's extent (store/plans.py). A window has no bound on its
origin's side but the cursor's, so a stale extent costs reads, never documents. A
string extent is coarse (the class of a name's first character: leads/counters.py),
so the first characters of the first value a first page found start the next one's
windows instead (held in memory, per scope, field and direction).

A plan that is not ``ordered`` (conditions checked in the application, or a sort its
index cannot read in order) reads every candidate, keeps those passing the checks,
sorts them here and then fetches the page's documents by id.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .plans import STRING, Extent, ReadPlan
from .ranges import sort_key, sort_position
from .reads import Reads, merge_runs
from .windows import Window

# Up to this many matches (or no more than the page needs), a page is one read of them
# all: a window would save little.
FULL_READ_MAX = 100
# A first window is sized to hold this many times the documents the page needs, were
# the matches spread evenly over the scope's span (the range its documents cover):
# generous for a first page, tighter for a deep one, where 4x the documents before the
# page is most of the scope (docs/stores.md).
WINDOW_SLACK = 4
WINDOW_SLACK_DEEP = 1.25
WINDOW_SLACK_LEADS = 50  # pages needing up to this many documents get the whole slack
WINDOW_GROWTH = 8  # when a window held nothing
WINDOW_GROWTH_MAX = 64
SPANS_KEPT = 10_000
# The characters of a first page's first string value kept as the next one's origin:
# enough to start within a clump of one first name (3 left a window of thousands of
# leads at 20,000; 8: 3 ms a page). Held in memory only (docs/privacy.md).
ORIGIN_CHARS = 8
# A cursor page's read also returns up to this many documents that share the cursor's
# value and that earlier pages showed (the cursor's own is one), and drops them.
TIES_READ = 5


def _keep(kept: dict[Any, Any], key: Any, value: Any) -> None:
    """``kept[key] = value``, the oldest entry forgotten first past SPANS_KEPT."""
    if key not in kept and len(kept) >= SPANS_KEPT:
        kept.pop(next(iter(kept)))
    kept[key] = value


def window_slack(target: int) -> float:
    return max(WINDOW_SLACK_DEEP, min(WINDOW_SLACK, WINDOW_SLACK * WINDOW_SLACK_LEADS / target))


@dataclass(frozen=True)
class Page:
    docs: list[dict[str, Any]]  # the page's documents, and one more when there is a next
    total: int
    exact: bool = True  # False when counting stopped at the caller's bound


# The number of matches, whether it is exact, and whether it was counted now (rather
# than taken from the caller's own counters).
Counter = Callable[[], Awaitable[tuple[int, bool, bool]]]


class Pager:
    """Reads pages of plans; remembers, per scope and sort field, the span its documents
    cover (as windowed reads measured it), which sizes the next first window. Only a
    guess: it never changes a result."""

    def __init__(self, projection: dict[str, int]) -> None:
        self._projection = projection
        # Per scope and field: the span its documents cover, and the origin it was
        # measured from (a first page on a string field trusts only its own origin's).
        self._spans: dict[tuple[Any, str, int], tuple[Any, Any]] = {}
        self._origins: dict[tuple[Any, str, int], str] = {}

    async def read(
        self, reads: Reads, plan: ReadPlan, *, page: int, limit: int, count: Counter
    ) -> Page:
        """Page ``page`` (or the page after ``plan.after``) of ``limit`` documents.
        ``count`` gives the number of matches of an ordered plan (``Pager.count``, or
        the caller's counters); it may set ``plan.extent`` (``plan.needs_extent``)."""
        if not plan.ordered:
            return await self._by_candidates(reads, plan, page=page, limit=limit)
        total, exact, counted = await count()
        if counted and total == 0:
            return Page([], total, exact)  # just counted: nothing to read
        return Page(await self._page(reads, plan, total, page, limit), total, exact)

    async def count(self, reads: Reads, plan: ReadPlan, *, bound: int = 0) -> tuple[int, bool]:
        """The number of matches, and whether it is exact (not cut at ``bound``, 0: none)."""
        filters = [plan.filter(part) for part in plan.parts]
        if plan.overlap:  # a document can be in two parts: count it once
            found = await asyncio.gather(*(reads.ids(f, limit=bound) for f in filters))
            total = len(set().union(*found))
            sizes = [len(ids) for ids in found]
        else:  # parts are disjoint (one value each)
            sizes = list(await asyncio.gather(*(reads.count(f, limit=bound) for f in filters)))
            total = sum(sizes)
        if bound and any(n >= bound for n in sizes):
            return bound, False
        return total, True

    async def _page(
        self, reads: Reads, plan: ReadPlan, total: int, page: int, limit: int
    ) -> builtins.list[dict[str, Any]]:
        """The documents of the page, and one more when there is a next page."""
        want = limit + 1
        if plan.after is None:
            skip = (page - 1) * limit
            self._start_near_the_first(plan)
            docs = await self._windows(reads, plan, total, skip=skip, want=want)
            assert docs is not None
            if skip == 0 and docs:
                self._remember_the_first(plan, docs[0])
            return docs
        if plan.ties_in_window:
            docs = await self._windows(reads, plan, total, skip=0, want=want, with_ties=True)
            if docs is not None:
                return docs
        found: list[dict[str, Any]] = []
        if plan.reads_ties:  # apart: many share the cursor's value, or not a time
            filters = [plan.filter(part, tie=True) for part in plan.parts]
            found, _, _ = await self._merged(reads, plan, filters, skip=0, want=want)
            if len(found) >= want:
                return found
        docs = await self._windows(reads, plan, total, skip=0, want=want - len(found))
        assert docs is not None
        return found + docs

    async def _windows(
        self,
        reads: Reads,
        plan: ReadPlan,
        total: int,
        *,
        skip: int,
        want: int,
        with_ties: bool = False,
    ) -> builtins.list[dict[str, Any]] | None:
        """Up to ``want`` documents after the first ``skip``, read in windows that widen
        until they hold them. ``with_ties``: the windows start at the cursor's own value,
        and the documents there that are not beyond the cursor are dropped; None when
        more of them than TIES_READ filled the read."""
        slack = TIES_READ if with_ties else 0
        window = self._first_window(plan, total, skip + want)
        while True:
            width = None if window is None else window.width
            extra, last = plan.window(width, with_ties=with_ties)
            filters = [plan.filter(part, extra) for part in plan.parts]
            docs, seen, whole = await self._merged(
                reads, plan, filters, skip=skip, want=want + slack
            )
            if with_ties:
                docs = [doc for doc in docs if plan.beyond_cursor(doc)]
            if len(docs) >= want:
                if window is not None:
                    self._measured(plan, total, skip + want, docs[want - 1])
                return docs[:want]
            if not whole:  # the read was cut at its limit by documents that were dropped
                return None
            if last:
                return docs
            assert window is not None  # a read without a window is the last
            window.widen(seen, skip + want)

    async def _merged(
        self,
        reads: Reads,
        plan: ReadPlan,
        filters: builtins.list[dict[str, Any]],
        *,
        skip: int,
        want: int,
    ) -> tuple[builtins.list[dict[str, Any]], int, bool]:
        """Up to ``want`` documents after the first ``skip`` in sort order, over all
        filters; how many the read saw (0: unknown); and whether it read every match (no
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
        merged = merge_runs(runs, plan.field, plan.direction)
        whole = len(merged) <= limit and all(len(run) < limit for run in runs)
        return merged[skip : skip + want], len(merged), whole

    def _start_near_the_first(self, plan: ReadPlan) -> None:
        """Move a coarse string extent's near end to the first value a first page found
        (a few characters of it) when that lies inside it. A value below it (a lead made
        since) is read all the same: the window holds everything up to its edge."""
        hint = self._origins.get(self._span_key(plan))
        if plan.kind != STRING or plan.extent is None or hint is None:
            return
        low, high = plan.extent.low, plan.extent.high
        if plan.direction > 0 and isinstance(low, str) and hint > low:
            plan.extent = Extent(hint, high)
        elif plan.direction < 0 and isinstance(high, str) and hint < high:
            plan.extent = Extent(low, hint)

    def _remember_the_first(self, plan: ReadPlan, doc: dict[str, Any]) -> None:
        value = doc.get(plan.field)
        if plan.kind != STRING or not plan.needs_extent or not isinstance(value, str):
            return
        _keep(self._origins, self._span_key(plan), value[:ORIGIN_CHARS])

    def _first_window(self, plan: ReadPlan, total: int, target: int) -> Window | None:
        """The first window: wide enough to hold ``target`` documents a few times over,
        were the matches spread evenly; None (no window) when there are few matches."""
        if not plan.windowable or total <= max(FULL_READ_MAX, target):
            return None
        origin = plan.scan_origin()
        if origin is None:
            return None
        span, measured_from = self._spans.get(self._span_key(plan), (plan.default_span, None))
        if plan.kind == STRING and plan.after is None and measured_from != origin:
            span = plan.default_span
        far = plan.far_bound()
        if far is not None:
            span = min(span, abs(origin - far))
        least = plan.window_min
        return Window(
            max(least, span * (window_slack(target) * target / total)),
            least,
            growth_min=2.0,  # wide enough for twice what is missing, were they spread evenly
            aim=2.0,
            growth_max=WINDOW_GROWTH_MAX,
            empty_growth=WINDOW_GROWTH,
        )

    def _measured(self, plan: ReadPlan, total: int, target: int, doc: dict[str, Any]) -> None:
        """Remember the span a full window implies: its ``target``-th document lay this far
        from the origin, so all ``total`` would lie about ``total / target`` times as far."""
        origin, value = plan.scan_origin(), plan.position(doc.get(plan.field))
        if plan.own or origin is None or value is None:
            return  # a range on the sort field says nothing of the scope's span
        _keep(self._spans, self._span_key(plan), (abs(origin - value) * (total / target), origin))

    @staticmethod
    def _span_key(plan: ReadPlan) -> tuple[Any, str, int]:
        return tuple(plan.scope.values()), plan.field, plan.direction

    async def _by_candidates(self, reads: Reads, plan: ReadPlan, *, page: int, limit: int) -> Page:
        """Read every candidate of the chosen index (this scope's), keep those passing
        the checks, sort them here, then fetch the page's documents by id."""
        field = plan.field
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
        key = sort_key(field)
        matches.sort(key=key, reverse=reverse)
        total = len(matches)
        if plan.after is not None:
            position = sort_position(plan.after.value, plan.after.doc_id)
            beyond = [d for d in matches if (key(d) < position if reverse else key(d) > position)]
            chosen = beyond[: limit + 1]
        else:
            start = (page - 1) * limit
            chosen = matches[start : start + limit + 1]
        ids = [d["_id"] for d in chosen]
        docs: list[dict[str, Any]] = []
        if ids:
            found = await reads.find({"_id": {"$in": ids}}, self._projection)
            # The ids came from this scope's documents; check again rather than trust it.
            by_id = {d["_id"]: d for d in found if plan.in_scope(d)}
            docs = [by_id[i] for i in ids if i in by_id]
        return Page(docs, total)
