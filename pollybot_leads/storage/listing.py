"""Listing a chatbot's leads: filters, sorts, pages and cursors, each from an index.

Queries are shaped so that a plain planner answers them from an index without a hint:
every condition is an equality, ``$in`` or range on a field of the chosen index. Only
shapes that cannot be (several metadata filters, status and source together) carry a
hint. Sorted queries on a time field are read in growing windows back from the start
point (now, or the cursor), so a page costs the leads near it, not the whole chatbot;
the windows only narrow the scan and never change the result.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from ..domain.leads import SEARCH_PREFIX_MAX, metadata_entry, prefix_upper_bound, word_matches
from ..domain.queries import SORTS, CursorPosition, LeadPage, LeadQuery
from ..domain.timeutil import MILLISECOND, utcnow
from .client import aggregate
from .indexes import INDEX_FIELDS, choose_lead_index
from .quirks import PLAIN, StoreQuirks

WINDOW_START = timedelta(hours=1)
WINDOW_GROWTH = 8
WINDOW_MAX = timedelta(days=365 * 30)
TIME_FIELDS = ("createdAt", "updatedAt")
# A multi-word search reads the candidates of its longest word; past this many it lets
# the database intersect the words instead.
CANDIDATES_MAX = 20_000


class ListPlan:
    """The conditions of one list query and how they are run."""

    def __init__(self, chatbot_id: str, query: LeadQuery) -> None:
        self.query = query
        self.field, self.direction = SORTS[query.sort]
        self.index = choose_lead_index(query)
        self.simple: dict[str, Any] = {"chatbotId": chatbot_id}
        self.residual: list[dict[str, Any]] = []
        if query.statuses:
            self.simple["status"] = _one_or_in(query.statuses)
        if query.sources:
            self.simple["source"] = _one_or_in(query.sources)
        if query.email is not None:
            self.simple["emailFolded"] = query.email
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
                self.simple[field] = bounds
        for position, (key, values) in enumerate(query.metadata):
            entries = [e for e in (metadata_entry(key, v) for v in values) if e is not None]
            condition = {"metadataIndex": _one_or_in(tuple(entries))}
            if position == 0:
                self.simple.update(condition)
            else:
                self.residual.append(condition)
        for position, word in enumerate(_longest_first(query.words)):
            condition = {"searchPrefixes": word[:SEARCH_PREFIX_MAX]}
            if position == 0:
                self.simple.update(condition)
            else:
                self.residual.append(condition)
            if len(word) > SEARCH_PREFIX_MAX:
                self.residual.append({"searchTerms": {"$elemMatch": _prefix_range(word)}})
        fields = INDEX_FIELDS[self.index]
        self.windowable = self.field in TIME_FIELDS and self.field in fields
        ranged = any(_is_range(v) for v in self.simple.values())
        self.count_hint = None if self._plain(set(self.simple), ranged) else self.index
        # Finds add a range on the sort field (window, cursor) when they can.
        self.find_hint = (
            None
            if self._plain(
                set(self.simple) | {self.field, "_id"},
                ranged or self.windowable or query.after is not None,
            )
            else self.index
        )

    def _plain(self, used: set[str], ranged: bool) -> bool:
        """Whether any planner picks our index unprompted: only equality, $in or ranges
        on its own fields (and never $in beside a range, which simple planners refuse)."""
        has_in = any(isinstance(v, dict) and "$in" in v for v in self.simple.values())
        return not self.residual and used <= INDEX_FIELDS[self.index] and not (has_in and ranged)

    def filter(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        out = dict(self.simple)
        for field, condition in (extra or {}).items():
            if field in out and isinstance(out[field], dict) and isinstance(condition, dict):
                out[field] = intersect_ranges(out[field], condition)
            else:
                out[field] = condition
        for field in TIME_FIELDS:
            if isinstance(out.get(field), dict):
                out[field] = _exclusive_bounds(out[field])
        if self.residual:
            out["$and"] = list(self.residual)
        return out

    def cursor_ties(self) -> dict[str, Any] | None:
        """After a cursor: the leads sharing its sort value, which come first in id order."""
        after = self.query.after
        if after is None:
            return None
        op = "$lt" if self.direction < 0 else "$gt"
        return {self.field: after.value, "_id": {op: after.lead_id}}

    def window(self, width: timedelta | None) -> dict[str, Any] | None:
        """The sort-field range of a read ``width`` wide from the scan origin, beyond any
        cursor. ``None`` width: the whole range beyond the cursor. Returns None when the
        width is past the widest window or the query cannot be read in windows."""
        extra: dict[str, Any] = {}
        if self.query.after is not None:
            op = "$lt" if self.direction < 0 else "$gt"
            extra[self.field] = {op: self.query.after.value}
        if width is None:
            return extra
        origin = self.scan_origin()
        if origin is None or width > WINDOW_MAX:
            return None
        if self.direction < 0:
            window = {"$gte": origin - width}
        else:
            window = {"$lte": origin + width}
        extra[self.field] = intersect_ranges(extra.get(self.field, {}), window)
        return extra

    def scan_origin(self) -> datetime | None:
        """Where a windowed read starts: the nearest of now (for newest first), the
        cursor, and the query's own bound on the sort field; None when nothing bounds it."""
        if not self.windowable:
            return None
        own = self.simple.get(self.field)
        own = own if isinstance(own, dict) else {}
        after = self.query.after.value if self.query.after is not None else None
        if self.direction < 0:
            points = [utcnow(), after, own.get("$lt"), own.get("$lte")]
            return min(p for p in points if p is not None)
        points = [after, own.get("$gt"), own.get("$gte")]
        present = [p for p in points if p is not None]
        return max(present) if present else None

    @property
    def sort(self) -> list[tuple[str, int]]:
        return [(self.field, self.direction), ("_id", self.direction)]

    @property
    def counted_by_status_only(self) -> bool:
        """Whether `total` is the chatbot's own lead counters (no filter but status)."""
        return set(self.simple) <= {"chatbotId", "status"} and not self.residual

    @property
    def search_by_candidates(self) -> bool:
        q = self.query
        return len(q.words) > 1 and set(self.simple) == {"chatbotId", "searchPrefixes"}


class LeadLister:
    """Runs list queries for the lead repository (which owns the collections)."""

    def __init__(
        self,
        leads: Any,
        projection: dict[str, int],
        *,
        counts: Callable[[str], Awaitable[dict[str, Any] | None]],
        quirks: StoreQuirks = PLAIN,
        max_count: int = 0,
    ) -> None:
        self._leads, self._projection = leads, projection
        self._counts = counts  # the chatbot's lead counters (total and by status)
        self._quirks = quirks
        self._max_count = max_count  # 0: counts are always exact

    async def list(self, chatbot_id: str, query: LeadQuery) -> LeadPage:
        plan = ListPlan(chatbot_id, query)
        if plan.search_by_candidates:
            page = await self._list_by_candidates(plan)
            if page is not None:
                return page
        total, exact = await self._total(chatbot_id, plan)
        docs = await self._page(plan)
        return _page_of(docs, total, query, plan.field, total_exact=exact)

    async def _total(self, chatbot_id: str, plan: ListPlan) -> tuple[int, bool]:
        """The number of matching leads, and whether it is exact (not cut at the bound)."""
        if plan.counted_by_status_only:
            counts = await self._counts(chatbot_id)
            if counts is not None:
                statuses = plan.query.statuses
                if not statuses:
                    return counts.get("total", 0), True
                return sum(counts.get("byStatus", {}).get(s, 0) for s in statuses), True
        # $match + $count rather than count_documents ($group): the same result, and
        # SecantusDB runs it about a third faster.
        pipeline: list[dict[str, Any]] = [{"$match": plan.filter()}]
        if self._max_count:
            pipeline.append({"$limit": self._max_count})
        pipeline.append({"$count": "n"})
        options = {"hint": plan.count_hint} if plan.count_hint else {}
        rows = await aggregate(self._leads, pipeline, **options)
        total = rows[0]["n"] if rows else 0
        return total, not (self._max_count and total >= self._max_count)

    async def _find(
        self, plan: ListPlan, extra: dict[str, Any], *, skip: int = 0, limit: int
    ) -> list[dict[str, Any]]:
        options: dict[str, Any] = {"sort": plan.sort, "skip": skip, "limit": limit}
        if plan.find_hint:
            options["hint"] = plan.find_hint
        cursor = self._leads.find(plan.filter(extra), self._projection, **options)
        return await cursor.to_list(length=limit)

    async def _page(self, plan: ListPlan) -> list[dict[str, Any]]:
        """The leads of the page, and one more when there is a next page."""
        query = plan.query
        want, found = query.limit + 1, []
        skip = 0 if query.after is not None else (query.page - 1) * query.limit
        tie = plan.cursor_ties()
        if tie is not None:
            found = await self._find(plan, tie, limit=want)
            if len(found) >= want:
                return found
        width = WINDOW_START
        while True:
            extra = plan.window(width)
            # Past the widest window, or once the query's own bounds are tighter than the
            # window, this read is the whole remaining range: it is the last.
            last = extra is None or plan.filter(extra) == plan.filter(plan.window(None))
            extra = plan.window(None) if extra is None else extra
            docs = await self._find(plan, extra, skip=skip, limit=want - len(found))
            if len(found) + len(docs) >= want or last:
                return found + docs
            width *= WINDOW_GROWTH

    async def _list_by_candidates(self, plan: ListPlan) -> LeadPage | None:
        """Several search words: read the longest word's matches, keep those matching all."""
        query, field = plan.query, plan.field
        words = _longest_first(query.words)
        projection = {"searchTerms": 1, field: 1}
        cursor = self._leads.find(dict(plan.simple), projection, limit=CANDIDATES_MAX + 1)
        candidates = await cursor.to_list(length=CANDIDATES_MAX + 1)
        if len(candidates) > CANDIDATES_MAX:
            return None
        matches = [
            doc
            for doc in candidates
            if all(word_matches(w, doc.get("searchTerms", [])) for w in words)
        ]
        reverse = plan.direction < 0
        matches.sort(key=lambda d: (d.get(field), d["_id"]), reverse=reverse)
        total = len(matches)
        if query.after is not None:
            position = (query.after.value, query.after.lead_id)
            matches = [
                d
                for d in matches
                if (
                    (d.get(field), d["_id"]) < position
                    if reverse
                    else (d.get(field), d["_id"]) > position
                )
            ]
            chosen = matches[: query.limit + 1]
        else:
            start = (query.page - 1) * query.limit
            chosen = matches[start : start + query.limit + 1]
        ids = [d["_id"] for d in chosen]
        found = await self._leads.find({"_id": {"$in": ids}}, self._projection).to_list(None)
        # The ids came from this chatbot's leads; check again rather than trust it.
        by_id = {d["_id"]: d for d in found if d.get("chatbotId") == plan.simple["chatbotId"]}
        docs = [by_id[i] for i in ids if i in by_id]
        return _page_of(docs, total, query, field)

    async def explain(self, chatbot_id: str, query: LeadQuery) -> list[dict[str, Any]]:
        """The server's plans for the queries a list request runs (first window, count)."""
        plan = ListPlan(chatbot_id, query)
        db, name = self._leads.database, self._leads.name
        finds = []
        if plan.search_by_candidates:
            finds.append((dict(plan.simple), None))
        tie = plan.cursor_ties()
        if tie is not None:
            finds.append((plan.filter(tie), plan.find_hint))
        first = plan.window(WINDOW_START)
        finds.append((plan.filter(plan.window(None) if first is None else first), plan.find_hint))
        if not plan.counted_by_status_only:
            finds.append((plan.filter(), plan.count_hint))
        plans = []
        for filter_, hint in finds:
            command: dict[str, Any] = {
                "find": name,
                "filter": filter_,
                "sort": dict(plan.sort),
                "limit": query.limit + 1,
            }
            if hint:
                command["hint"] = hint
            plans.append(await db.command("explain", command, verbosity="queryPlanner"))
        return plans


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

    Stored times have millisecond precision, so this selects the same leads. Some
    MongoDB-wire servers (SecantusDB 0.7) drop the leads equal to an inclusive bound at
    the far end of an index range; exclusive bounds are read right everywhere.
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


def _page_of(
    docs: list[dict], total: int, query: LeadQuery, field: str, *, total_exact: bool = True
) -> LeadPage:
    has_next = len(docs) > query.limit
    docs = docs[: query.limit]
    last = None
    if docs:
        last = CursorPosition(query.sort, docs[-1].get(field), docs[-1]["_id"])
    return LeadPage(docs, total, has_next, last, total_exact)


def _is_range(condition: Any) -> bool:
    return isinstance(condition, dict) and bool({"$gt", "$gte", "$lt", "$lte"} & set(condition))


def _longest_first(words: tuple[str, ...]) -> list[str]:
    return sorted(words, key=len, reverse=True)


def _prefix_range(word: str) -> dict[str, Any]:
    upper = prefix_upper_bound(word)
    return {"$gte": word} if upper is None else {"$gte": word, "$lt": upper}


def _one_or_in(values: tuple) -> Any:
    return values[0] if len(values) == 1 else {"$in": list(values)}
