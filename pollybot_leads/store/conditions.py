"""What a reader asks of a field, independent of the shape of the query that asks it.

A feature describes its filters with these (``OneOf``, ``AllOf``, ``Between``,
``AnyBetween``); store/plans.py decides, for the store at hand, whether each becomes a
part of one query, an equality read of an index (one per value), or a ``Check`` applied
in the application to candidates read from an index. Each condition has both forms:
``query()`` (the filter on its field) and ``test()`` (the same condition on a stored
value, as the server would evaluate it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .ranges import within


@dataclass(frozen=True)
class OneOf:
    """The field equals one of ``values``; an array field (``array``): holds one of them
    (so a document can match several values)."""

    field: str
    values: tuple[Any, ...]
    array: bool = False

    def query(self) -> Any:
        return self.values[0] if len(self.values) == 1 else {"$in": list(self.values)}

    def test(self) -> Callable[[Any], bool]:
        allowed = set(self.values)
        if self.array:
            return lambda held: isinstance(held, list) and not allowed.isdisjoint(held)
        return lambda value: value in allowed


@dataclass(frozen=True)
class AllOf:
    """An array field holds every one of ``values``. ``each``: where given, one condition
    per value that is equivalent to it, checked in the application instead (on a field
    that costs less to read)."""

    field: str
    values: tuple[Any, ...]
    each: tuple[Condition, ...] = ()

    def query(self) -> Any:
        return self.values[0] if len(self.values) == 1 else {"$all": list(self.values)}

    def test(self) -> Callable[[Any], bool]:
        wanted = set(self.values)
        return lambda held: isinstance(held, list) and wanted.issubset(held)

    def checks(self, start: int = 0) -> list[Check]:
        """The checks of the values from ``start`` on (the others read from an index)."""
        if self.each:
            return [Check(each.field, each.test()) for each in self.each[start:]]
        rest = AllOf(self.field, self.values[start:])
        return [Check(self.field, rest.test())] if rest.values else []


@dataclass(frozen=True)
class Between:
    """The field lies in a range (``$gt``, ``$gte``, ``$lt``, ``$lte``)."""

    field: str
    bounds: dict[str, Any]

    def query(self) -> Any:
        return self.bounds

    def test(self) -> Callable[[Any], bool]:
        return within(self.bounds)


@dataclass(frozen=True)
class AnyBetween:
    """An element of an array field lies in a range."""

    field: str
    bounds: dict[str, Any]

    def query(self) -> Any:
        return {"$elemMatch": self.bounds}

    def test(self) -> Callable[[Any], bool]:
        inside = within(self.bounds)
        return lambda held: isinstance(held, list) and any(inside(item) for item in held)


Condition = OneOf | AllOf | Between | AnyBetween


@dataclass(frozen=True)
class Check:
    """A condition checked in the application on a candidate (its field is not in the
    index the candidates were read from)."""

    field: str
    test: Callable[[Any], bool]

    def __call__(self, doc: dict[str, Any]) -> bool:
        return self.test(doc.get(self.field))
