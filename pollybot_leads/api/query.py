"""Query strings: the list parameters (with metadata.<key> filters) and cursors."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from datetime import UTC, datetime
from typing import Any

from marshmallow import ValidationError, fields, validate, validates
from multidict import MultiMapping

from ..domain.leads import SEARCH_MAX_WORDS, STATUSES, fold, query_words
from ..domain.metadata import MAX_KEY_LENGTH
from ..domain.queries import DEFAULT_SORT, SORTS, CursorPosition, LeadQuery
from ..domain.timeutil import to_ms
from ..errors import ValidationFailed
from .schemas import CamelSchema, camel

MAX_PAGE = 1_000_000
METADATA_PREFIX = "metadata."
METADATA_FILTERS_MAX = 5
_INT = re.compile(r"^-?(0|[1-9][0-9]{0,17})\Z")
_FLOAT = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?\Z")


def _csv(values: list[str], allowed: tuple[str, ...] | None, max_len: int) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(v.strip() for v in values))
    if not items or any(not v for v in items):
        raise ValidationError("Empty value.")
    if allowed is not None:
        bad = [v for v in items if v not in allowed]
        if bad:
            raise ValidationError(f"Must be one or more of: {', '.join(allowed)}.")
    elif any(len(v) > max_len for v in items):
        raise ValidationError(f"Each value must be at most {max_len} characters.")
    return items


class CsvField(fields.String):
    """``a,b,c`` → a tuple of distinct values, each checked."""

    def __init__(self, allowed: tuple[str, ...] | None = None, max_len: int = 64, **kw: Any):
        super().__init__(**kw)
        self.allowed, self.max_len = allowed, max_len

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> tuple[str, ...]:
        text = super()._deserialize(value, attr, data, **kwargs)
        return _csv(text.split(","), self.allowed, self.max_len)


# Times a filter may name. Wider than any lead's, and far enough from the ends of what
# Python and BSON dates hold that bounds and windows computed from them stay in range.
DATE_MIN = datetime(1900, 1, 1, tzinfo=UTC)
DATE_MAX = datetime(9999, 1, 1, tzinfo=UTC)


class UtcDateTime(fields.AwareDateTime):
    """ISO 8601; a time without an offset is taken as UTC."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(format="iso", default_timezone=UTC, **kwargs)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> datetime:
        parsed = to_ms(super()._deserialize(value, attr, data, **kwargs))
        if not DATE_MIN <= parsed <= DATE_MAX:
            raise ValidationError("Must be between 1900-01-01T00:00:00Z and 9999-01-01T00:00:00Z.")
        return parsed


class LeadListQuerySchema(CamelSchema):
    """Every list parameter; ``metadata.<key>`` parameters are handled beside it."""

    page = fields.Integer(
        load_default=1,
        strict=False,
        validate=validate.Range(1, MAX_PAGE),
        metadata={"description": "1-based page number (page/limit paging)."},
    )
    limit = fields.Integer(load_default=10, validate=validate.Range(1, 100))
    status = CsvField(
        allowed=STATUSES,
        metadata={"description": "One status, or several comma-separated.", "example": "new"},
    )
    source = CsvField(
        max_len=64,
        metadata={"description": "One source, or several comma-separated.", "example": "website"},
    )
    email = fields.Email(
        validate=validate.Length(max=254),
        metadata={"description": "Exact address, case-insensitive."},
    )
    search = fields.String(
        validate=validate.Length(1, 200),
        metadata={
            "description": "Words (all must match) that begin a word of the name or of the "
            "email: its local part split at . _ - +, and its domain. Case- and "
            "accent-insensitive.",
            "example": "jo",
        },
    )
    created_after = UtcDateTime(metadata={"description": "ISO 8601, inclusive."})
    created_before = UtcDateTime(metadata={"description": "ISO 8601, exclusive."})
    updated_after = UtcDateTime(metadata={"description": "ISO 8601, inclusive."})
    updated_before = UtcDateTime(metadata={"description": "ISO 8601, exclusive."})
    sort = fields.String(
        load_default=DEFAULT_SORT,
        validate=validate.OneOf(tuple(SORTS)),
        metadata={"description": "Order; ties are broken by id in the same direction."},
    )
    cursor = fields.String(
        validate=validate.Length(1, 512),
        metadata={
            "description": "Continue after the last lead of a previous page (its "
            "pagination.nextCursor); use instead of page."
        },
    )

    @validates("search")
    def _search(self, value: str, **kwargs: Any) -> None:
        words = query_words(value)
        if not words:
            raise ValidationError("Give at least one word.")
        if len(words) > SEARCH_MAX_WORDS:
            raise ValidationError(f"At most {SEARCH_MAX_WORDS} words.")


class CursorCodec:
    """Opaque, signed cursors: a modified cursor fails its HMAC and is refused."""

    def __init__(self, secret: bytes) -> None:
        self._key = hashlib.sha256(b"pollybot-leads cursor\0" + secret).digest()

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:16]

    def encode(self, position: CursorPosition) -> str:
        value = position.value
        if isinstance(value, datetime):
            value = {"t": int(to_ms(value).timestamp() * 1000)}
        body = json.dumps(
            {"s": position.sort, "v": value, "i": position.lead_id}, separators=(",", ":")
        ).encode()
        return _b64(body) + "." + _b64(self._sign(body))

    def decode(self, token: str) -> CursorPosition:
        try:
            body_text, sig_text = token.split(".")
            body, sig = _unb64(body_text), _unb64(sig_text)
        except (ValueError, binascii.Error):
            raise ValidationFailed(details={"cursor": ["Not a valid cursor."]}) from None
        if not hmac.compare_digest(sig, self._sign(body)):
            raise ValidationFailed(details={"cursor": ["Not a valid cursor."]})
        data = json.loads(body)
        value = data["v"]
        if isinstance(value, dict):
            value = datetime.fromtimestamp(value["t"] / 1000, UTC)
        return CursorPosition(data["s"], value, data["i"])


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def metadata_value_candidates(text: str) -> tuple[Any, ...]:
    """What ``metadata.<key>=<text>`` matches: the string, and the number or boolean it spells.

    ``5`` matches 5, 5.0 and "5"; ``true`` matches true and "true"; anything else matches
    only that string. An array matches when one of its elements does.
    """
    values: list[Any] = [text]
    if text in ("true", "false"):
        values.append(text == "true")
    elif _INT.match(text):
        values.append(int(text))
    elif _FLOAT.match(text):
        number = float(text)
        if number == number and abs(number) != float("inf"):
            values.append(number)
    return tuple(values)


def parse_list_query(query: MultiMapping[str], codec: CursorCodec) -> LeadQuery:
    """Validate a list request's query string into a LeadQuery, or raise naming each bad one."""
    errors: dict[str, list[str]] = {}
    plain: dict[str, str] = {}
    metadata: list[tuple[str, tuple[Any, ...]]] = []
    for name in dict.fromkeys(query.keys()):
        values = query.getall(name)
        if len(values) > 1:
            errors[name] = ["Give this parameter once (use commas for several values)."]
            continue
        if name.startswith(METADATA_PREFIX):
            key = name[len(METADATA_PREFIX) :]
            if not 1 <= len(key) <= MAX_KEY_LENGTH or key.startswith("$") or "." in key:
                errors[name] = ["Filter on a top-level metadata key: metadata.<key>."]
            elif len(values[0]) > 200:
                errors[name] = ["At most 200 characters."]
            else:
                metadata.append((key, metadata_value_candidates(values[0])))
            continue
        plain[name] = values[0]
    if len(metadata) > METADATA_FILTERS_MAX:
        errors["metadata"] = [f"At most {METADATA_FILTERS_MAX} metadata filters."]
    try:
        data = LeadListQuerySchema().load(plain)
    except ValidationError as exc:
        errors.update(_flatten(exc.messages))
        data = None
    if errors or data is None:
        raise ValidationFailed("Invalid query parameters", details=errors)

    after = None
    if "cursor" in data:
        if "page" in plain:
            raise ValidationFailed(
                "Invalid query parameters",
                details={"cursor": ["Use either cursor or page, not both."]},
            )
        after = codec.decode(data["cursor"])
        if after.sort != data["sort"]:
            raise ValidationFailed(
                "Invalid query parameters",
                details={"cursor": ["This cursor belongs to another sort order."]},
            )
    for low, high in (("created_after", "created_before"), ("updated_after", "updated_before")):
        if low in data and high in data and data[low] >= data[high]:
            raise ValidationFailed(
                "Invalid query parameters",
                details={camel(high): [f"Must be later than {camel(low)}."]},
            )
    return LeadQuery(
        statuses=data.get("status", ()),
        sources=data.get("source", ()),
        email=fold(data["email"]) if "email" in data else None,
        created_after=data.get("created_after"),
        created_before=data.get("created_before"),
        updated_after=data.get("updated_after"),
        updated_before=data.get("updated_before"),
        metadata=tuple(metadata),
        words=tuple(query_words(data["search"])) if "search" in data else (),
        sort=data["sort"],
        page=data["page"],
        limit=data["limit"],
        after=after,
    )


def _flatten(messages: Any) -> dict[str, list[str]]:
    if isinstance(messages, dict):
        return {str(k): (v if isinstance(v, list) else [str(v)]) for k, v in messages.items()}
    return {"_query": list(messages)}


def parse_confirm(query: MultiMapping[str], header: str | None) -> bool:
    """Delete's confirmation: ``?confirm=true`` or ``X-Confirm-Delete: true``."""
    unknown = [name for name in query if name != "confirm"]
    if unknown:
        raise ValidationFailed(
            "Invalid query parameters", details={n: ["Unknown parameter."] for n in unknown}
        )
    values = query.getall("confirm", [])
    return (values == ["true"]) or (header or "").strip().lower() == "true"


def reject_query(query: MultiMapping[str]) -> None:
    if query:
        raise ValidationFailed(
            "Invalid query parameters",
            details={name: ["Unknown parameter."] for name in dict.fromkeys(query.keys())},
        )
