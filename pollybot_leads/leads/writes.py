"""What a request asks of a chatbot's leads, and what each write came to."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..errors import AppError, ValidationFailed

CREATE, UPDATE, DELETE, UPSERT = "create", "update", "delete", "upsert"
# What an upsert matches the chatbot's leads on (``?upsert=``, a batch's ``upsert``).
UPSERT_ON = ("email", "phone", "externalId")
# Delete the chatbot's leads with one email or phone (privacy/erasure.py), this many at
# most in one transaction: each costs a lead deletion, its events' redaction and its
# audit record, and the chatbot's other writes wait for the transaction.
ERASE = "erase"
ERASE_CHUNK = 25
# Merge leads into one (``lead_id``, the target; ``fields["source_ids"]``: 1-10 others).
MERGE = "merge"
MERGE_SOURCES_MAX = 10

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
    ``lead_id``), DELETE (``lead_id``, with ``audit``: who asked), UPSERT (``fields``:
    a new lead, merged into the chatbot's newest lead with the same ``on``, of UPSERT_ON:
    email, phone in E.164 or external id, if there is one), or
    ERASE (``fields``: ``emailFolded`` or ``phoneKey``; up to ERASE_CHUNK of the
    chatbot's leads with it deleted, with ``audit``, their events saying ``reason``), or
    MERGE (``lead_id``: the target; ``fields["source_ids"]``: the leads merged into it
    and deleted, with ``audit``).
    ``if_match``: the If-Match header an UPDATE or DELETE must satisfy.
    """

    kind: str
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)
    lead_id: str | None = None
    if_match: str | None = None
    audit: dict[str, Any] | None = None
    # UPSERT: the fields the request sent, merged as a PUT would into a lead it finds,
    # and what it matches on.
    merge: dict[str, Any] | None = None
    on: str = "email"
    # DELETE and ERASE: why, in the lead.deleted event and the audit ("erasure").
    reason: str | None = None

    @property
    def weight(self) -> int:
        """What it costs a group commit, in single-lead writes."""
        if self.kind == MERGE:
            return 1 + len(self.fields["source_ids"])
        return ERASE_CHUNK if self.kind == ERASE else 1


@dataclass(frozen=True)
class Written:
    lead: dict[str, Any]  # the public lead as this write left it
    created: bool


@dataclass(frozen=True)
class Deleted:
    lead_id: str
    deleted_at: datetime


@dataclass(frozen=True)
class Erased:
    lead_ids: list[str]  # deleted by this write
    more: bool  # the chatbot has more leads with the address (another write takes them)


Outcome = Written | Deleted | Erased | AppError
