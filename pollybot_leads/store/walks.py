"""Walking every match of a plan once, in the order of a time field, in bounded reads.

**Exactly once while others write.** A walk follows one immutable order, a time that
never changes (a creation time) then id, newest or oldest first, and each read
continues strictly after the last document the previous read returned (a keyset). A
document's place in that order never changes, so one that exists for the whole walk
and matches throughout lies in exactly one read's range and is returned exactly once,
whatever is created, changed or deleted meanwhile; none is ever returned twice. Each
read is one query (``ReadPlan.for_walk``), so that it is taken at one moment.

**Bounded reads.** Where a store reads a query's whole index range before it applies
the limit (store/quirks.py, ``limit_reads_whole_range``), "the next 500 after here"
would cost everything after here, every time. Each read is therefore bounded by a
window of times as well as the limit (store/windows.py), sized from what the previous
read found (the span that held a full read, or wider after a sparse one), so that every
read examines about one read's worth of candidates. An oldest-first walk first finds
the oldest candidate: one indexed query with limit 1; on an index-only store, probes of
slices of time from the floor on, each cheap while it is empty.

**Steps.** :func:`walk` yields after every read (a page, possibly empty when no
candidate of a window passed the checks), so its caller can give each read a deadline
of its own and stop between any two.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..timeutil import MILLISECOND, to_ms, utcnow
from .client import store_errors
from .plans import ReadPlan
from .reads import Reads
from .windows import Window

READ_LIMIT = 500  # documents per read (and so per page) at most, besides a few ties
FIRST_WIDTH = timedelta(hours=1)  # the first window, before anything is known
MIN_WIDTH = timedelta(seconds=1)
MAX_WIDTH = timedelta(days=365 * 200)
GROWTH_MAX = 8  # a window after an empty one is at most this many times as wide
TARGET_SHARE = 0.75  # a window is sized to hold about this share of a full read
# Documents created this long after the walk began are not read: a newest-first walk
# starts here, an oldest-first one stops here (one created during the walk may or may
# not be in it; the slack covers clocks of other servers a little behind ours).
CLOCK_SLACK = timedelta(minutes=1)
# An oldest-first walk on an index-only store finds its start by probing the first
# 1/SLICES of the time left: an empty probe costs next to nothing, the first one that is
# not costs at most the candidates of that slice.
START_SLICES = 8


def _window() -> Window:
    return Window(FIRST_WIDTH, MIN_WIDTH, MAX_WIDTH, aim=TARGET_SHARE, growth_max=GROWTH_MAX)


@dataclass
class _Position:
    """Where a walk stands: every document before ``(time, doc_id)`` in the walk's order
    has been read; with ``doc_id`` None, every document at ``time`` too. ``ties``: how
    many at ``time`` were read (a read from ``time`` on returns them again)."""

    time: datetime
    doc_id: Any = None
    ties: int = 0
    window: Window = field(default_factory=_window)
    done: bool = False


async def walk(
    reads: Reads, plan: ReadPlan, projection: dict[str, int], *, floor: datetime
) -> AsyncIterator[list[dict[str, Any]]]:
    """The documents matching ``plan`` (sorted on a time field), in pages of at most
    about READ_LIMIT; one read per page, and a page may be empty. ``floor``: no document
    is older (a window reaching past it is the last, and reads everything older)."""
    if not plan.parts:  # a value that can never match: nothing does
        return
    projection = projection | {check.field: 1 for check in plan.checks}
    ceiling = plan.own.get("$lt") or utcnow() + CLOCK_SLACK
    if plan.direction < 0:
        at = _Position(ceiling)
    else:
        start = plan.own.get("$gte") or await _oldest(reads, plan, ceiling, floor)
        if start is None:
            return
        at = _Position(start - MILLISECOND)  # every document after it: from start on
    floor = plan.own.get("$gte") or floor
    while not at.done:
        docs = await _step(reads, plan, at, projection, floor, ceiling)
        yield [doc for doc in docs if all(check(doc) for check in plan.checks)]


async def _step(
    reads: Reads,
    plan: ReadPlan,
    at: _Position,
    projection: dict[str, int],
    floor: datetime,
    ceiling: datetime,
) -> list[dict[str, Any]]:
    """One read: the candidates after ``at`` in the next window; moves ``at`` on."""
    newest_first = plan.direction < 0
    window = at.window
    if newest_first:
        near = {"$lte" if at.doc_id else "$lt": at.time}
        edge = to_ms(at.time - window.width)
        last = edge <= floor  # the read's own bound (or none) ends the walk
        far = {} if last else {"$gte": edge}
    else:
        near = {"$gte" if at.doc_id else "$gt": at.time}
        edge = to_ms(at.time + window.width)
        last = edge >= ceiling
        far = {"$lt": ceiling} if last else {"$lte": edge}
    limit = READ_LIMIT + at.ties
    found = await _find(
        reads, plan.filter(plan.parts[0], near | far), projection, sort=plan.sort, limit=limit
    )
    beyond = [doc for doc in found if _beyond(doc, plan.field, at, newest_first)]
    if len(found) < limit:  # the whole window was read
        if last:
            at.done = True
        at.time, at.doc_id, at.ties = edge, None, 0
        window.widen(len(beyond), READ_LIMIT)
        return beyond
    if not beyond:  # a full read of documents already seen (many share one time): read more
        at.ties += READ_LIMIT
        return []
    end = beyond[-1]
    at_end = sum(1 for doc in beyond if doc[plan.field] == end[plan.field])
    at.ties = at_end + (at.ties if end[plan.field] == at.time else 0)
    window.fit(abs(at.time - end[plan.field]))  # held a full read
    at.time, at.doc_id = end[plan.field], end["_id"]
    return beyond


async def _oldest(
    reads: Reads, plan: ReadPlan, ceiling: datetime, floor: datetime
) -> datetime | None:
    """The time of the oldest candidate before ``ceiling``; None if none."""

    async def first(bounds: dict[str, Any]) -> datetime | None:
        docs = await _find(
            reads,
            plan.filter(plan.parts[0], bounds),
            {plan.field: 1},
            sort=[(plan.field, 1), ("_id", 1)],
            limit=1,
        )
        return docs[0][plan.field] if docs else None

    if not plan.quirks.index_only_filters:
        return await first({"$lt": ceiling})  # the index's first key
    # A limit does not stop the scan there: probe thin slices of time first. Empty ones
    # cost next to nothing; the first that is not holds the oldest.
    oldest = await first({"$lt": floor})
    low = floor
    while oldest is None and low < ceiling:
        high = (
            ceiling if ceiling - low <= MIN_WIDTH else to_ms(low + (ceiling - low) / START_SLICES)
        )
        oldest = await first({"$gte": low, "$lt": high})
        low = high
    return oldest


@store_errors
async def _find(
    reads: Reads,
    filter_: dict[str, Any],
    projection: dict[str, int],
    *,
    sort: list[tuple[str, int]],
    limit: int,
) -> list[dict[str, Any]]:
    return await reads.find(filter_, projection, sort=sort, limit=limit)


def _beyond(doc: dict[str, Any], field: str, at: _Position, newest_first: bool) -> bool:
    """Whether ``doc`` comes after the walk's position (not read before)."""
    if at.doc_id is None:
        return True  # the read's own bound excludes the documents at ``at.time``
    key, position = (doc[field], doc["_id"]), (at.time, at.doc_id)
    return key < position if newest_first else key > position
