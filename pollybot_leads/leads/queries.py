"""What a list request asks for, independent of HTTP and of the database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

# sort parameter -> (stored field, direction); ties are broken by id in the same direction.
SORTS: dict[str, tuple[str, int]] = {
    "createdAt": ("createdAt", 1),
    "-createdAt": ("createdAt", -1),
    "updatedAt": ("updatedAt", 1),
    "-updatedAt": ("updatedAt", -1),
    "name": ("nameSort", 1),
    "-name": ("nameSort", -1),
}
DEFAULT_SORT = "-createdAt"


@dataclass(frozen=True)
class CursorPosition:
    """Where the previous page ended: the sort it was taken in, and its last item."""

    sort: str
    value: Any  # the last item's sort value (datetime or folded name)
    lead_id: str


@dataclass(frozen=True)
class LeadQuery:
    statuses: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    email: str | None = None  # folded
    phone: str | None = None  # its key (leads/phones.py, phone_key)
    phone_text: str | None = None  # as given (read again in the chatbot's region)
    external_id: str | None = None
    created_after: datetime | None = None  # inclusive
    created_before: datetime | None = None  # exclusive
    updated_after: datetime | None = None
    updated_before: datetime | None = None
    metadata: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # key -> any of these values
    words: tuple[str, ...] = ()
    sort: str = DEFAULT_SORT
    page: int = 1
    limit: int = 10
    after: CursorPosition | None = None


@dataclass(frozen=True)
class LeadPage:
    leads: list[dict[str, Any]]
    total: int
    has_next: bool
    last_position: CursorPosition | None  # of the last lead returned, for nextCursor
    total_exact: bool = True  # False when counting stopped at the configured bound
