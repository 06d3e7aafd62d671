"""Ranges of values (``$gt``, ``$gte``, ``$lt``, ``$lte``) and sort positions, as the
store compares and orders them."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..timeutil import MILLISECOND

LOWER = ("$gt", "$gte")
UPPER = ("$lt", "$lte")

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}


@dataclass(frozen=True)
class Cursor:
    """Where the previous page ended: its last document's sort value and id."""

    value: Any
    doc_id: Any


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
        lower = op in LOWER
        tighter = value > current if lower else value < current
        stricter = value == current and op in ("$gt", "$lt")
        if tighter or stricter:
            del out[current_op]
            out[op] = value
    return out


def exclusive_time_bounds(condition: dict[str, Any]) -> dict[str, Any]:
    """Inclusive time bounds as exclusive ones a millisecond further out.

    Stored times have millisecond precision, so this selects the same documents (for
    the stores that need it: store/quirks.py, ``exclusive_time_bounds``).
    """
    out = {}
    for op, value in condition.items():
        if op == "$gte" and isinstance(value, datetime):
            op, value = "$gt", value - MILLISECOND
        elif op == "$lte" and isinstance(value, datetime):
            op, value = "$lt", value + MILLISECOND
        out[op] = value
    return out


def within(bounds: dict[str, Any]) -> Callable[[Any], bool]:
    """Whether a value lies in a range ($gt, $gte, $lt, $lte); a missing value never does."""
    tests = [(_COMPARE[op], bound) for op, bound in bounds.items()]
    return lambda value: (
        not tests or (value is not None and all(compare(value, bound) for compare, bound in tests))
    )


def sort_position(value: Any, doc_id: Any) -> tuple[Any, ...]:
    """A sort position that orders like the server: a missing value (null) first."""
    return (value is not None, value if value is not None else 0, doc_id)


def sort_key(field: str) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    return lambda doc: sort_position(doc.get(field), doc["_id"])


def _same_side(a: str, b: str) -> bool:
    return (a in LOWER) == (b in LOWER) and a in (*LOWER, *UPPER)
