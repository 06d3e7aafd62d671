"""What a request asks of a chatbot's leads, and what each write came to."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..errors import AppError

CREATE, UPDATE, DELETE, UPSERT = "create", "update", "delete", "upsert"


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
