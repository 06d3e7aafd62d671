"""How a sorted read of one scope's documents is shaped for the store at hand.

A feature says what it reads: the scope (``{"chatbotId": ...}``, a prefix of every
index it reads), its conditions (store/conditions.py), the sort, a cursor, and the index
its query belongs on (``IndexLayout``). Every query the plan sends names the scope and
is answered from an index that begins with it, so a read costs that scope's documents,
never another's. No query hints an index. A plan takes one of two shapes, after the
store's quirks (store/quirks.py):

- Plain (MongoDB): one query holds every condition (``$in``, ``$all``, conditions on
  fields outside the chosen index); the server's planner bounds it by an index.
- Index-only (``index_only_filters``): each query names only fields of the chosen
  index, as equalities and at most one range (on the index's last field). A list of
  values becomes one equality read per value (per combination, on an index with two
  equality fields), merged in sort order (store/paging.py); conditions on fields
  outside the index are ``Check``s applied in the application to the candidates.

A read sorted on a time field is read in windows (store/paging.py); where a limit does
not stop a scan (``limit_reads_whole_range``), reads sorted on a string field are too,
in windows of string positions (store/positions.py), and ascending reads start at the
scope's lowest value (``extent``, which the feature keeps) rather than at the first key.
Inclusive time bounds are sent as exclusive ones a millisecond further out where the
store drops the keys equal to them (``exclusive_time_bounds``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..timeutil import utcnow
from .conditions import AllOf, AnyBetween, Between, Check, Condition, OneOf
from .positions import LETTERS_SPAN, STRING_TOP, string_edge, string_position
from .quirks import PLAIN, StoreQuirks
from .ranges import Cursor, exclusive_time_bounds, intersect_ranges, sort_position, within

# Kinds of sort field: what its windows measure.
TIME = "time"
STRING = "string"

# The span assumed for a scope until a windowed read has measured it (per process).
DEFAULT_SPAN = timedelta(days=365)
# At least a second: a chatbot capturing leads fast (hundreds a minute) is read a few
# seconds back for its first page, not a whole minute of leads (docs/load.md).
WINDOW_MIN = timedelta(seconds=1)
WINDOW_MAX = timedelta(days=365 * 30)


@dataclass(frozen=True)
class IndexLayout:
    """An index's fields after the scope and before ``_id``: those it pins by equality
    (``keys``; none for an index per sort) and the last one (``ranged``), which it can
    read a range of."""

    name: str
    keys: tuple[str, ...]
    ranged: str

    def holds(self, field: str) -> bool:
        return field in self.keys or field == self.ranged


@dataclass(frozen=True)
class Extent:
    """The lowest and highest values of the sort field in the scope, as the feature
    keeps them (None where unknown). Only a starting point for windows: a stale one
    costs reads, never documents."""

    low: Any = None
    high: Any = None


class ReadPlan:
    """The conditions of one read and how they are read.

    ``parts``: the filters read, one per value of the index's equality fields when the
    store needs ``$in`` split (their results are merged), else one. ``own``: the read's
    bounds on ``range_field``, kept apart because reads narrow them (cursor, window).
    ``checks``: conditions tested in the application. ``ordered``: pages are read from
    the index in sort order; otherwise every candidate is read and sorted in the
    application. ``overlap``: a document can match two parts.
    """

    def __init__(
        self,
        scope: dict[str, Any],
        conditions: Sequence[Condition],
        *,
        sort: tuple[str, int],
        kind: str,
        index: IndexLayout,
        after: Cursor | None = None,
        quirks: StoreQuirks = PLAIN,
    ) -> None:
        self.scope = scope
        self.conditions = tuple(conditions)
        self.field, self.direction = sort
        self.kind = kind
        self.index = index
        self.after = after
        self.quirks = quirks
        self.parts: list[dict[str, Any]] = []
        self.checks: list[Check] = []
        self.overlap = False
        self.range_field = self.field
        self.own: dict[str, Any] = {}
        # The scope's extent on the sort field, where a scan starts from it (needs_extent).
        self.extent: Extent | None = None
        if quirks.index_only_filters:
            self._index_only()
        else:
            self._plain()

    @classmethod
    def for_walk(
        cls,
        scope: dict[str, Any],
        conditions: Sequence[Condition],
        *,
        sort: tuple[str, int],
        index: IndexLayout,
        fallback: IndexLayout,
        quirks: StoreQuirks = PLAIN,
    ) -> ReadPlan:
        """A plan read in one query per step (store/walks.py), on a time field.

        Where the store needs lists of values split, reads of one value each would be
        taken at different moments, and a document moving between two values while the
        walk runs could be missed: so the walk reads ``fallback`` (an index ranging over
        the sort field, with no equality fields) and checks every condition instead. An
        ``index`` that does not range over the sort field is read as ``fallback`` too.
        """
        if not quirks.index_only_filters:
            return cls(scope, conditions, sort=sort, kind=TIME, index=index, quirks=quirks)
        if index.ranged != sort[0]:
            index = fallback
        plan = cls(scope, conditions, sort=sort, kind=TIME, index=index, quirks=quirks)
        if len(plan.parts) > 1:
            plan = cls(scope, conditions, sort=sort, kind=TIME, index=fallback, quirks=quirks)
        return plan

    def _plain(self) -> None:
        """One query with every condition; the server's planner picks the index."""
        base: dict[str, Any] = dict(self.scope)
        more: list[dict[str, Any]] = []
        for condition in self.conditions:
            if isinstance(condition, Between) and condition.field == self.field:
                self.own = condition.bounds
            elif condition.field in base or isinstance(condition, AnyBetween):
                # A second condition on a field, or one on its elements: in $and.
                more.append({condition.field: condition.query()})
            else:
                base[condition.field] = condition.query()
        if more:
            base["$and"] = more
        self.parts = [base]
        self.ordered = True
        self.windowable = self._windowed_field and self.index.holds(self.field)

    def _index_only(self) -> None:
        """Equality reads on the chosen index's fields; everything else checked here."""
        keys, ranged = self.index.keys, self.index.ranged
        values: dict[str, list[Any]] = {}
        for condition in self.conditions:
            field = condition.field
            if isinstance(condition, Between) and field == ranged:
                self.own = condition.bounds
            elif isinstance(condition, OneOf) and field in keys and field not in values:
                values[field] = list(condition.values)
                self.overlap = self.overlap or (condition.array and len(condition.values) > 1)
            elif isinstance(condition, AllOf) and field in keys and field not in values:
                values[field] = [condition.values[0]]
                self.checks += condition.checks(1)
            elif isinstance(condition, AllOf):
                self.checks += condition.checks()
            else:
                self.checks.append(Check(field, condition.test()))
        # One read per combination of the index's values (several statuses with several
        # sources: each pair); none (a value list that is empty): no match.
        self.parts = [
            {**self.scope, **dict(zip(keys, combination, strict=True))}
            for combination in itertools.product(*(values.get(key, []) for key in keys))
        ]
        self.range_field = ranged
        self.ordered = not self.checks and self.field == ranged
        self.windowable = self.ordered and self._windowed_field

    @property
    def _windowed_field(self) -> bool:
        """Whether reads sorted on this field go in windows: on time fields; where a limit
        does not stop a scan, on string fields too."""
        return self.kind == TIME or (self.kind == STRING and self.quirks.limit_reads_whole_range)

    def filter(
        self, part: dict[str, Any], extra: dict[str, Any] | None = None, *, tie: bool = False
    ) -> dict[str, Any]:
        """The filter of one read of ``part``: the read's own bounds narrowed by ``extra``
        (a cursor, a window), or with ``tie`` the documents sharing the cursor's sort
        value."""
        out = dict(part)
        if tie:
            after = self.after
            assert after is not None
            out[self.field] = after.value
            out["_id"] = {"$lt" if self.direction < 0 else "$gt": after.doc_id}
        else:
            bounds = intersect_ranges(self.own, extra or {})
            if bounds:
                out[self.range_field] = bounds
        if self.quirks.exclusive_time_bounds:
            for field, condition in out.items():
                if isinstance(condition, dict) and not field.startswith("$"):
                    out[field] = exclusive_time_bounds(condition)
        return out

    @property
    def reads_ties(self) -> bool:
        """Whether a cursor page reads the documents sharing the cursor's sort value (they
        come first, in id order): not when the read's own bounds exclude that value."""
        return self.after is not None and within(self.own)(self.after.value)

    @property
    def ties_in_window(self) -> bool:
        """Whether those documents are read with the window (its cursor bound inclusive,
        those that earlier pages showed dropped) rather than apart. Only on time fields,
        where an inclusive bound can be sent as an exclusive one a millisecond further."""
        return self.reads_ties and self.kind == TIME

    def beyond_cursor(self, doc: dict[str, Any]) -> bool:
        if self.after is None:
            return True
        position = sort_position(self.after.value, self.after.doc_id)
        key = sort_position(doc.get(self.field), doc["_id"])
        return key < position if self.direction < 0 else key > position

    def window(self, width: Any, *, with_ties: bool = False) -> tuple[dict[str, Any], bool]:
        """The sort-field range of a read ``width`` wide from the scan origin, beyond any
        cursor (``with_ties``: from the cursor's value on), and whether that read covers
        all that is left (``None`` width: no window). Widths are timedeltas on time
        fields and spans of string positions on string fields."""
        extra: dict[str, Any] = {}
        if self.after is not None:
            if self.direction < 0:
                op = "$lte" if with_ties else "$lt"
            else:
                op = "$gte" if with_ties else "$gt"
            extra = {op: self.after.value}
        origin = self.scan_origin()
        if width is None or origin is None or width > self.window_max:
            return extra, True
        if self.kind == STRING:
            return self._string_window(extra, origin, width)
        far = self.far_bound()
        if self.direction < 0:
            edge = origin - width
            window, last = {"$gte": edge}, far is not None and edge <= far
        else:
            edge = origin + width
            window, last = {"$lte": edge}, far is not None and edge >= far
        return intersect_ranges(extra, window), last

    def _string_window(
        self, extra: dict[str, Any], origin: int, width: Any
    ) -> tuple[dict[str, Any], bool]:
        """A window of strings: from the origin's string to one about ``width`` further
        (string_edge); the scan's end when that passes the first or last possible one.
        There is no bound on the origin's side but the cursor's: the window holds every
        document up to its edge whatever the extent says."""
        start = self._origin_string()
        assert start is not None
        if self.direction < 0:
            far = origin - int(width)
            if far <= 0:
                return extra, True
            return intersect_ranges(extra, {"$gte": string_edge(start, far)}), False
        far = origin + int(width)
        if far >= STRING_TOP:
            return extra, True
        return intersect_ranges(extra, {"$lt": string_edge(start, far)}), False

    def _origin_string(self) -> str | None:
        if self.after is not None and isinstance(self.after.value, str):
            return self.after.value
        if self.extent is None:
            return None
        origin = self.extent.low if self.direction > 0 else self.extent.high
        return origin if isinstance(origin, str) else None

    def scan_origin(self) -> Any:
        """Where a windowed read starts, as a position on the sort field (a time, or
        string_position of a string): the nearest of now (for newest first), the cursor,
        and the read's own bound on the sort field; else, where a limit does not stop a
        scan, the scope's extent (its lowest time for oldest first; its lowest or highest
        string); None when nothing bounds it."""
        if not self.windowable:
            return None
        if self.kind == STRING:
            text = self._origin_string()
            return None if text is None else string_position(text)
        after = self.after.value if self.after is not None else None
        if self.direction < 0:
            points = [utcnow(), after, self.own.get("$lt"), self.own.get("$lte")]
            return min(p for p in points if p is not None)
        points = [after, self.own.get("$gt"), self.own.get("$gte")]
        present = [p for p in points if p is not None]
        if present:
            return max(present)
        if self.extent is not None and self.quirks.limit_reads_whole_range:
            return self.extent.low
        return None

    @property
    def needs_extent(self) -> bool:
        """Whether the scan starts at the scope's extent (see scan_origin)."""
        if not (self.windowable and self.quirks.limit_reads_whole_range):
            return False
        if self.after is not None:
            return False
        if self.kind == STRING:
            return True
        return self.direction > 0 and not any(op in self.own for op in ("$gt", "$gte"))

    def position(self, value: Any) -> Any:
        """A sort value as a position windows measure (string_position of a string)."""
        if self.kind == STRING:
            return string_position(value) if isinstance(value, str) else None
        return value if isinstance(value, datetime) else None

    @property
    def default_span(self) -> Any:
        return LETTERS_SPAN if self.kind == STRING else DEFAULT_SPAN

    @property
    def window_min(self) -> Any:
        return 1 if self.kind == STRING else WINDOW_MIN

    @property
    def window_max(self) -> Any:
        return STRING_TOP if self.kind == STRING else WINDOW_MAX

    def far_bound(self) -> datetime | None:
        """The read's own bound on the sort field at the far end of the scan."""
        if self.kind == STRING:
            return None
        ops = ("$gte", "$gt") if self.direction < 0 else ("$lt", "$lte")
        return next((self.own[op] for op in ops if op in self.own), None)

    @property
    def sort(self) -> list[tuple[str, int]]:
        return [(self.field, self.direction), ("_id", self.direction)]

    def in_scope(self, doc: dict[str, Any]) -> bool:
        return all(doc.get(field) == value for field, value in self.scope.items())
