"""Documents as MongoDB Extended JSON in canonical mode (``bson.json_util``), one per
line, and back: every BSON type survives the trip (dates, 64-bit integers, doubles,
binary), as ``mongoexport`` writes it. Dumps and restores use it."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from bson import json_util

_WRITE = json_util.CANONICAL_JSON_OPTIONS
_READ = json_util.CANONICAL_JSON_OPTIONS.with_options(tz_aware=True, tzinfo=UTC)


def encode(doc: Any) -> bytes:
    return json_util.dumps(doc, json_options=_WRITE).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = json_util.loads(line, json_options=_READ)
    return doc
