"""Field rules every feature's schemas share: camelCase names, unknown fields refused,
strings without control characters whose pattern and length the OpenAPI document
publishes exactly as the server applies them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields

SERVER_OWNED_MESSAGE = "Set by the server; it cannot be sent."
CONTROL_MESSAGE = "Control characters (U+0000-U+001F, U+007F-U+009F) are not allowed."
_SNAKE = re.compile(r"_([a-z])")

# Unicode's control characters (category Cc). Refused in every string the API reads,
# except inside metadata values, which are stored as sent.
CONTROL = r"\x00-\x1f\x7f-\x9f"
CONTROL_RE = re.compile(f"[{CONTROL}]")
TEXT = f"[^{CONTROL}]*"
NON_BLANK = f"[^{CONTROL}]*[^\\s{CONTROL}][^{CONTROL}]*"  # something left after trimming


def anchored(pattern: str) -> str:
    """The published form of a pattern the server applies with ``re.fullmatch``."""
    return f"^{pattern}$"


def camel(name: str) -> str:
    return _SNAKE.sub(lambda m: m.group(1).upper(), name)


class CamelSchema(Schema):
    """Field ``created_at`` is ``createdAt`` on the wire; unknown fields are errors."""

    class Meta:
        unknown = RAISE

    def on_bind_field(self, field_name: str, field_obj: fields.Field[Any]) -> None:
        field_obj.data_key = field_obj.data_key or camel(field_name)


class Text(fields.String):
    """A string without control characters, at most ``max_length`` characters as sent,
    that matches ``pattern`` whole; ``trim`` then removes surrounding whitespace.

    The OpenAPI document gets the same pattern and length: what it allows, the server
    accepts, and the other way round.
    """

    def __init__(
        self,
        *,
        max_length: int,
        pattern: str = TEXT,
        pattern_message: str = CONTROL_MESSAGE,
        trim: bool = False,
        min_length: int = 0,
        **kwargs: Any,
    ) -> None:
        metadata = dict(kwargs.pop("metadata", {}))
        metadata.setdefault("pattern", anchored(pattern))
        metadata.setdefault("maxLength", max_length)
        if min_length:
            metadata.setdefault("minLength", min_length)
        super().__init__(metadata=metadata, **kwargs)
        self.max_length, self.min_length, self.trim = max_length, min_length, trim
        self.pattern, self.pattern_message = re.compile(pattern), pattern_message

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if CONTROL_RE.search(text):
            raise ValidationError(CONTROL_MESSAGE)
        if len(text) > self.max_length:
            raise ValidationError(f"At most {self.max_length} characters.")
        if len(text) < self.min_length:
            raise ValidationError(f"At least {self.min_length} characters.")
        if not self.pattern.fullmatch(text):
            raise ValidationError(self.pattern_message)
        return text.strip() if self.trim else text


# The one way a query string writes an integer: ASCII digits, without a sign, spaces,
# underscores or leading zeros. int() alone also takes U+0967 (a Devanagari one), U+FF12
# (a full-width two), "1_0", "+1" and " 1".
CANONICAL_INTEGER = re.compile(r"0|[1-9][0-9]*")
CANONICAL_INTEGER_MESSAGE = (
    "Must be a whole number in digits 0-9, without sign, spaces or leading zeros."
)
# Longer is beyond every range a parameter has (and int() refuses past 4,300 digits).
INTEGER_DIGITS_MAX = 20


class StrictBoolean(fields.Boolean):
    """true or false only (marshmallow's Boolean also takes 1, 0, "yes"...)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise ValidationError("Not a valid boolean.")
        return value


class QueryInteger(fields.Integer):
    """A non-negative integer query parameter, written the one way (CANONICAL_INTEGER);
    its range is checked as any Integer's, so an out-of-range value names the range."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> int:
        if not isinstance(value, str) or not CANONICAL_INTEGER.fullmatch(value):
            raise ValidationError(CANONICAL_INTEGER_MESSAGE)
        return int(value) if len(value) <= INTEGER_DIGITS_MAX else 10**INTEGER_DIGITS_MAX


class ServerOwned(fields.Raw):
    """A field only the server sets: sending it at all is a validation error."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(load_only=True, **kwargs)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        raise ValidationError(SERVER_OWNED_MESSAGE)


def each_once(message: str = "Give each value once.") -> Callable[[list[Any]], None]:
    """A list validator: no value twice (the document says ``uniqueItems``)."""

    def check(values: list[Any]) -> None:
        if len(set(values)) != len(values):
            raise ValidationError(message)

    return check
