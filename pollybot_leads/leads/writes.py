"""What a request asks of a chatbot's leads, and what each write came to."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..errors import AppError, ValidationFailed

CREATE, UPDATE, DELETE, UPSERT = "create", "update", "delete", "upsert"

# The most index entries (leads/documents.py, index_entries) one batch may write: each
# costs the embedded store tens of microseconds, in the batch's one transaction,
# while the chatbot's other writes wait for it (docs/benchmarks.md, "Batches at their
# limits"). A lead a batch updates counts its entries before and after: all are rewritten.
BATCH_MAX_INDEX_ENTRIES = 10_000


def batch_too_heavy(entries: int, *, updates: bool) -> ValidationFailed:
    """The refusal of a batch that would write ``entries`` index entries (over the limit);
    ``updates``: counted with the leads it updates."""
    counted = (
        "With the leads it updates (their entries before and after), this batch writes"
        if updates
        else "These leads have"
    )
    return ValidationFailed(
        "The batch is over its index entry limit: split it",
        details={
            "leads": [
                f"{counted} {entries} index entries; a batch may write at most "
                f"{BATCH_MAX_INDEX_ENTRIES} (a lead has one per prefix of the words of its "
                "name and email, and one per filterable metadata value)."
            ]
        },
    )


@dataclass
class LeadWrite:
    """One change a request asks of a chatbot's leads.

    ``kind`` CREATE (``fields``: a validated new lead), UPDATE (``fields``: the changes to
    ``lead_id``), DELETE (``lead_id``, with ``audit``: who asked), or UPSERT (``fields``:
    a new lead, merged into the chatbot's newest lead with that email if there is one).
    ``if_match``: the If-Match header an UPDATE or DELETE must satisfy.
    """

    kind: str
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)
    lead_id: str | None = None
    if_match: str | None = None
    audit: dict[str, Any] | None = None
    # UPSERT: the fields the request sent, merged as a PUT would into a lead it finds.
    merge: dict[str, Any] | None = None


@dataclass(frozen=True)
class Written:
    lead: dict[str, Any]  # the public lead as this write left it
    created: bool


@dataclass(frozen=True)
class Deleted:
    lead_id: str
    deleted_at: datetime


Outcome = Written | Deleted | AppError
