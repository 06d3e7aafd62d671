"""What a group commit hands one transaction of lead writes: the units (one request's
writes each), the collections they touch, and how a unit is dropped from a batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import AppError
from ..idempotency.records import IdempotencyStore, Receipt
from .event_log import EventLog
from .suppressions import SuppressionList
from .writes import LeadWrite


@dataclass
class Unit:
    """One request's writes: they commit in one transaction, with its receipt."""

    workspace_id: str
    writes: list[LeadWrite]
    receipt: Receipt | None
    # The most index entries its writes may write (leads it updates count before and
    # after), or None: no limit. Over it, the unit alone is refused (TooHeavy).
    max_entries: int | None = None

    def size(self) -> int:
        return sum(write.weight for write in self.writes)


@dataclass(frozen=True)
class LeadStores:
    """The collections one transaction of lead writes touches."""

    leads: Any
    guards: Any
    audit: Any
    events: EventLog
    idempotency: IdempotencyStore
    suppressions: SuppressionList
    tombstones: Any  # of merged leads: {_id: its id, chatbotId, mergedInto, at}


class LeaseLost(Exception):
    def __init__(self, unit: Unit) -> None:
        super().__init__("idempotency lease lost")
        self.unit = unit


class TooHeavy(Exception):
    """A unit would write more index entries than its ``max_entries``: the transaction is
    dropped and runs without it, and the unit is refused with ``error``."""

    def __init__(self, unit: Unit, error: AppError) -> None:
        super().__init__("over the index entry limit")
        self.unit, self.error = unit, error
