"""A scan of every collection of a database for values: where a deleted lead's personal
data could still be (the contract's "Deletion is permanent everywhere").

Every document of every collection (``list_collection_names``) is walked whole: keys and
values, nested documents and arrays, strings and binary values (a kept response is
bytes), each compared case-insensitively (the store keeps folded copies of names and
emails) and in its JSON-escaped form too (a kept response escapes non-ASCII text).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any


def person(**extra: Any) -> dict[str, Any]:
    """A lead body whose every personal value is unique to it."""
    tag = secrets.token_hex(4)
    digits = f"{secrets.randbelow(10**8):08d}"
    return {
        "name": f"Secret Person {tag}",
        "email": f"secret.{tag}@private.example",
        "phone": f"+44 20 {digits[:4]} {digits[4:]}",
        "externalId": f"ext-{tag}",
        "metadata": {"note": f"meta-{tag}-value", "deep": {"list": [f"deep-{tag}"]}},
        **extra,
    }


def values_of(body: dict[str, Any]) -> list[str]:
    """The personal values of a :func:`person` a scan looks for: name, email, phone (as
    sent and in E.164), external id and metadata values."""
    meta = body["metadata"]
    # The phone also as the store compares it (E.164: "+44 20 1234 5678" -> "+442012345678").
    compared = "".join(ch for ch in body["phone"] if ch == "+" or ch.isdigit())
    return [
        body["name"],
        body["email"],
        body["phone"],
        compared,
        body["externalId"],
        meta["note"],
        meta["deep"]["list"][0],
    ]


@dataclass(frozen=True)
class Copy:
    """One value found: where, and the whole document it is in."""

    collection: str
    path: str
    value: str
    doc: dict[str, Any] = field(repr=False, compare=False)

    def __repr__(self) -> str:
        return f"{self.collection} {self.doc.get('_id')!r} {self.path}: {self.value!r}"


def _forms(value: str) -> set[str]:
    folded = value.casefold()
    return {folded, json.dumps(value)[1:-1].casefold(), json.dumps(folded)[1:-1]}


def _texts(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """(path, text) of every key and string (or bytes) value inside ``value``."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield f"{path}.{key}", str(key)
            yield from _texts(inner, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for i, inner in enumerate(value):
            yield from _texts(inner, f"{path}[{i}]")
    elif isinstance(value, str):
        yield path, value
    elif isinstance(value, bytes | bytearray | memoryview):
        yield path, bytes(value).decode("utf-8", "replace")


async def copies_in_store(db: Any, values: Iterable[str]) -> list[Copy]:
    """Every place where one of ``values`` is found."""
    needles = {value: _forms(value) for value in values}
    found = []
    for name in sorted(await db.list_collection_names()):
        async for doc in db[name].find({}):
            for path, text in _texts(doc, ""):
                hay = text.casefold()
                for value, forms in needles.items():
                    if any(form in hay for form in forms):
                        found.append(Copy(name, path, value, doc))
    return found


def collections_of(found: list[Copy]) -> set[str]:
    return {copy.collection for copy in found}
