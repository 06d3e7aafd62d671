"""Exporting a chatbot's leads: every match once, in creation order, in bounded reads.

An export walks creation time then id (``createdAt``, ``_id``), newest or oldest first:
an order that never changes, so every lead that exists for the whole export and matches
throughout is returned exactly once (store/walks.py says how). An order on a mutable
field, such as ``updatedAt`` or the name, could move a lead behind the walk or ahead of
it while it runs: exports do not offer one.

Each read is one query of this chatbot's leads, answered from an index that begins with
``chatbotId`` and ends in ``createdAt`` (the list's own where it can be, else
``by_created``: ``ReadPlan.for_walk``), so no read costs another tenant's data.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from ..store.plans import ReadPlan
from ..store.quirks import PLAIN, StoreQuirks
from ..store.reads import Reads
from ..store.walks import walk
from .indexes import choose_lead_index
from .listing import lead_conditions, lead_index
from .queries import SORTS, LeadQuery

EXPORT_SORTS = ("-createdAt", "createdAt")
# No lead is created before this (the earliest time a filter may name).
FLOOR = datetime(1900, 1, 1, tzinfo=UTC)


def export_plan(chatbot_id: str, query: LeadQuery, quirks: StoreQuirks = PLAIN) -> ReadPlan:
    """The plan of an export's reads: one read per step, of one index ending in createdAt."""
    if query.sort not in EXPORT_SORTS:
        raise ValueError(f"exports walk creation order, not {query.sort!r}")
    return ReadPlan.for_walk(
        {"chatbotId": chatbot_id},
        lead_conditions(query),
        sort=SORTS[query.sort],
        index=lead_index(choose_lead_index(query)),
        fallback=lead_index("by_created"),
        quirks=quirks,
    )


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
        """The matching leads (stored documents), in pages of at most about
        store/walks.py's READ_LIMIT; one read per page, and a page may be empty. With
        ``explain``, the server's explanation (executionStats) of every read is
        appended to it."""
        plan = export_plan(chatbot_id, query, self._quirks)
        reads = Reads(self._leads, explain)
        async for docs in walk(reads, plan, self._projection, floor=FLOOR):
            yield docs
