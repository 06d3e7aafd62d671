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

from aiohttp import web
from marshmallow import ValidationError, fields, validate, validates
from multidict import MultiMapping

from ..errors import ConfirmationRequired, ValidationFailed
from ..http.fields import (
    CONTROL,
    CONTROL_MESSAGE,
    CONTROL_RE,
    NON_BLANK,
    CamelSchema,
    QueryInteger,
    Text,
    anchored,
    camel,
)
from ..timeutil import to_ms
from .metadata import INT64_MAX, INT64_MIN, MAX_KEY_LENGTH
from .phones import phone_key
from .queries import DEFAULT_SORT, SORTS, CursorPosition, LeadQuery
from .rules import (
    EXTERNAL_ID_MAX,
    PHONE_MAX,
    SEARCH_MAX_WORDS,
    SOURCE_MAX,
    STATUSES,
    fold,
    query_words,
)
from .schemas import PHONE_PATTERN, EmailText

MAX_PAGE = 1_000_000
SEARCH_MAX_LENGTH = 200
CURSOR_PATTERN = r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+"
CONFIRM_HEADER = "X-Confirm-Delete"
METADATA_PREFIX = "metadata."
METADATA_FILTERS_MAX = 5
_INT = re.compile(r"^-?(0|[1-9][0-9]*)\Z")
_FLOAT = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?\Z")


_SPACE = f"[^\\S{CONTROL}]*"  # whitespace that is not a control character


def csv_pattern(item: str) -> str:
    """One item or several, comma-separated, each with optional spaces around it."""
    one = f"{_SPACE}{item}{_SPACE}"
    return f"{one}(?:,{one})*"


STATUS_CSV = csv_pattern("(?:" + "|".join(STATUSES) + ")")
SOURCE_CSV = csv_pattern(
    f"[^,\\s{CONTROL}](?:[^,{CONTROL}]{{0,{SOURCE_MAX - 2}}}[^,\\s{CONTROL}])?"
)


class CsvField(fields.String):
    """``a, b,c`` -> a tuple of distinct values, trimmed; the whole must match ``pattern``."""

    def __init__(self, pattern: str, message: str, **kw: Any):
        metadata = {"pattern": anchored(pattern), **kw.pop("metadata", {})}
        super().__init__(metadata=metadata, **kw)
        self.pattern, self.message = re.compile(pattern), message

    # A String on the wire, so the document calls it one; loaded as a tuple.
    def _deserialize(  # type: ignore[override]
        self, value: Any, attr: Any, data: Any, **kwargs: Any
    ) -> tuple[str, ...]:
        text = super()._deserialize(value, attr, data, **kwargs)
        if CONTROL_RE.search(text):
            raise ValidationError(CONTROL_MESSAGE)
        if not self.pattern.fullmatch(text):
            raise ValidationError(self.message)
        return tuple(dict.fromkeys(v.strip() for v in text.split(",")))


# Times a filter may name. Wider than any lead's, and far enough from the ends of what
# Python and BSON dates hold that bounds and windows computed from them stay in range.
DATE_MIN = datetime(1900, 1, 1, tzinfo=UTC)
DATE_MAX = datetime(9999, 1, 1, tzinfo=UTC)


DATES = (
    " ISO 8601 (RFC 3339); without an offset it is UTC. Between 1900-01-01T00:00:00Z and "
    "9999-01-01T00:00:00Z."
)


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

    page = QueryInteger(
        load_default=1,
        validate=validate.Range(1, MAX_PAGE),
        metadata={"description": "1-based page number (page/limit paging); not with cursor."},
    )
    limit = QueryInteger(
        load_default=10,
        validate=validate.Range(1, 100),
        metadata={"description": "Leads per page."},
    )
    status = CsvField(
        STATUS_CSV,
        f"Must be one or more of: {', '.join(STATUSES)}, comma-separated.",
        metadata={
            "description": "One status, or several comma-separated (any of them matches).",
            "example": "new,contacted",
        },
    )
    source = CsvField(
        SOURCE_CSV,
        f"One or more sources of 1-{SOURCE_MAX} characters, comma-separated.",
        metadata={
            "description": f"One source, or several comma-separated (any of them matches); "
            f"each 1-{SOURCE_MAX} characters after trimming, without commas or control "
            "characters.",
            "example": "website",
        },
    )
    email = EmailText(
        metadata={
            "description": "Exact address, case-insensitive.",
            "example": "john.doe@example.com",
        },
    )
    phone = Text(
        max_length=PHONE_MAX,
        pattern=PHONE_PATTERN,
        pattern_message="Use digits, spaces and + - ( ) . only, with at least one digit.",
        metadata={
            "description": "A phone number, compared as a number: the leads whose phone is "
            "the same number in E.164 (`+1 (415) 555-2671` finds `+14155552671`); a number "
            "that does not parse (one without `+`) finds the leads whose phone has the same "
            "digits and does not parse either.",
            "example": "+1-415-555-2671",
        },
    )
    external_id = Text(
        max_length=EXTERNAL_ID_MAX,
        min_length=1,
        pattern=NON_BLANK,
        pattern_message="Must not be blank.",
        metadata={
            "description": "The lead with this externalId (exact, case-sensitive).",
            "example": "crm-contact-8812",
        },
    )
    search = Text(
        max_length=SEARCH_MAX_LENGTH,
        pattern=NON_BLANK,
        pattern_message="Give at least one word.",
        metadata={
            "description": "Words (all must match) that begin a word of the name or of the "
            "email: its local part split at . _ - +, and its domain. Case- and "
            "accent-insensitive. A word is a whitespace-separated run that is not only "
            f"punctuation; give 1 to {SEARCH_MAX_WORDS} words (more, or none, is a 400).",
            "example": "jo",
        },
    )
    created_after = UtcDateTime(
        metadata={"description": "Created at or after (inclusive)." + DATES}
    )
    created_before = UtcDateTime(
        metadata={"description": "Created before (exclusive); later than createdAfter." + DATES}
    )
    updated_after = UtcDateTime(
        metadata={"description": "Updated at or after (inclusive)." + DATES}
    )
    updated_before = UtcDateTime(
        metadata={"description": "Updated before (exclusive); later than updatedAfter." + DATES}
    )
    sort = fields.String(
        load_default=DEFAULT_SORT,
        validate=validate.OneOf(tuple(SORTS)),
        metadata={"description": "Order; ties are broken by id in the same direction."},
    )
    cursor = Text(
        max_length=512,
        pattern=CURSOR_PATTERN,
        pattern_message="Not a valid cursor.",
        metadata={
            "description": "Continue after the last lead of a previous page: its "
            "pagination.nextCursor, with the same sort. Opaque and signed by the server: "
            "any other value is a 400. Use instead of page: both together are a 400."
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


cursor_codec_key = web.AppKey("cursor_codec", CursorCodec)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def metadata_value_candidates(text: str) -> tuple[Any, ...]:
    """What ``metadata.<key>=<text>`` matches: the string, and the number or boolean it spells.

    ``5`` matches 5, 5.0 and "5"; ``true`` matches true and "true"; anything else matches
    only that string. An array matches when one of its elements does. Any integer of 64
    bits matches exactly (it is never read as a float, which holds 53). Metadata holds no
    integer beyond 64 bits (a body with one is refused), so a longer one matches its string,
    and a float only where a float is exactly that integer (``1`` followed by 20 zeros
    matches 1e20).
    """
    values: list[Any] = [text]
    if text in ("true", "false"):
        values.append(text == "true")
    elif _INT.match(text):
        whole = int(text)
        if INT64_MIN <= whole <= INT64_MAX:
            values.append(whole)
        elif abs(whole) < 2**1024 and int(float(whole)) == whole:
            values.append(float(whole))
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
            elif CONTROL_RE.search(name) or CONTROL_RE.search(values[0]):
                errors[name] = [CONTROL_MESSAGE]
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
        phone=phone_key(data["phone"]) if "phone" in data else None,
        phone_text=data.get("phone"),
        external_id=data.get("external_id"),
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


def require_confirmation(query: MultiMapping[str], header: str | None) -> None:
    """Delete's confirmation: ``?confirm=true``, or ``X-Confirm-Delete: true`` instead.

    Each one that is sent must say true (a ``confirm=false`` beside a confirming header
    is a refusal, not a confirmation); at least one must be sent.
    """
    unknown = [name for name in query if name != "confirm"]
    if unknown:
        raise ValidationFailed(
            "Invalid query parameters", details={n: ["Unknown parameter."] for n in unknown}
        )
    values = query.getall("confirm", [])
    problems: dict[str, list[str]] = {}
    if values and values != ["true"]:
        problems["confirm"] = ["Must be true (once)."]
    if header is not None and header.strip().lower() != "true":
        problems[CONFIRM_HEADER] = ["Must be true."]
    if problems or (not values and header is None):
        raise ConfirmationRequired(details=problems or None)


def reject_query(query: MultiMapping[str]) -> None:
    if query:
        raise ValidationFailed(
            "Invalid query parameters",
            details={name: ["Unknown parameter."] for name in dict.fromkeys(query.keys())},
        )
