"""Marshmallow schemas: request validation (load) and the documented response shapes.

String rules are written once, as patterns: the server checks each value with
``re.fullmatch`` and the OpenAPI document publishes the same pattern (anchored), so the
document says exactly what the server accepts.
"""

from __future__ import annotations

import re
from typing import Any, TypedDict

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    validate,
    validates_schema,
)

from .metadata import (
    MAX_DEPTH,
    MAX_KEY_LENGTH,
    MAX_KEYS_PER_OBJECT,
    MAX_SERIALIZED_BYTES,
    metadata_problems,
)
from .rules import (
    EMAIL_MAX,
    NAME_MAX,
    PHONE_MAX,
    SOURCE_MAX,
    STATUSES,
)

SERVER_OWNED_MESSAGE = "Set by the server; it cannot be sent."
CONTROL_MESSAGE = "Control characters (U+0000-U+001F, U+007F-U+009F) are not allowed."
_SNAKE = re.compile(r"_([a-z])")

# Unicode's control characters (category Cc). Refused in every string the API reads,
# except inside metadata values, which are stored as sent.
CONTROL = r"\x00-\x1f\x7f-\x9f"
CONTROL_RE = re.compile(f"[{CONTROL}]")
TEXT = f"[^{CONTROL}]*"
NON_BLANK = f"[^{CONTROL}]*[^\\s{CONTROL}][^{CONTROL}]*"  # something left after trimming
PHONE_PATTERN = r"[0-9 +\-().]*[0-9][0-9 +\-().]*"


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


class EmailText(fields.Email):
    """An email address (at most EMAIL_MAX characters) without control characters."""

    def __init__(self, **kwargs: Any) -> None:
        metadata = {"pattern": anchored(TEXT), "maxLength": EMAIL_MAX, **kwargs.pop("metadata", {})}
        super().__init__(metadata=metadata, **kwargs)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        if isinstance(value, str):
            if CONTROL_RE.search(value):
                raise ValidationError(CONTROL_MESSAGE)
            if len(value) > EMAIL_MAX:
                raise ValidationError(f"At most {EMAIL_MAX} characters.")
        return super()._deserialize(value, attr, data, **kwargs)


class ServerOwned(fields.Raw):
    """A field only the server sets: sending it at all is a validation error."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(load_only=True, **kwargs)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        raise ValidationError(SERVER_OWNED_MESSAGE)


def name_field(**kwargs: Any) -> Text:
    return Text(
        max_length=NAME_MAX,
        pattern=NON_BLANK,
        pattern_message="Must not be blank.",
        trim=True,
        metadata={
            "description": f"The lead's name: at most {NAME_MAX} characters, no control "
            "characters; surrounding whitespace is removed and something must remain.",
            "example": "John Doe",
        },
        **kwargs,
    )


def email_field(**kwargs: Any) -> EmailText:
    return EmailText(
        metadata={
            "description": f"Email address, at most {EMAIL_MAX} characters. Stored as sent; "
            "the email filter and search compare it case-insensitively.",
            "example": "john.doe@example.com",
        },
        **kwargs,
    )


def phone_field(**kwargs: Any) -> Text:
    return Text(
        max_length=PHONE_MAX,
        pattern=PHONE_PATTERN,
        pattern_message="Use digits, spaces and + - ( ) . only, with at least one digit.",
        trim=True,
        allow_none=True,
        metadata={
            "description": f"Phone number: at most {PHONE_MAX} characters of digits, spaces "
            "and `+-().`, at least one digit; surrounding spaces are removed. "
            "null: none.",
            "example": "+1-555-123-4567",
        },
        **kwargs,
    )


def source_field(**kwargs: Any) -> Text:
    return Text(
        max_length=SOURCE_MAX,
        pattern=NON_BLANK,
        pattern_message="Must not be blank.",
        trim=True,
        allow_none=True,
        metadata={
            "description": f"Where the lead came from: at most {SOURCE_MAX} characters, no "
            "control characters, not blank; surrounding whitespace is removed. null: none.",
            "example": "website",
        },
        **kwargs,
    )


class _StatusKeywords(TypedDict):
    validate: validate.OneOf


# Spread into each status field: ``fields.String(..., **STATUS)``.
STATUS: _StatusKeywords = {"validate": validate.OneOf(STATUSES)}
METADATA_RULES = (
    f"Keys are 1-{MAX_KEY_LENGTH} characters, do not start with `$` and contain neither "
    f"`.` nor NUL; at most {MAX_KEYS_PER_OBJECT} keys per object; containers (objects and "
    f"arrays, the metadata itself included) nest at most {MAX_DEPTH} deep; integers fit "
    f"in 64 bits; at most {MAX_SERIALIZED_BYTES // 1024} KiB as compact JSON. Values may "
    "be any JSON, control characters included. A broken rule is a 400 naming the path."
)


class _LeadInputBase(CamelSchema):
    id = ServerOwned()
    chatbot_id = ServerOwned()
    workspace_id = ServerOwned()
    created_at = ServerOwned()
    updated_at = ServerOwned()
    status_history = ServerOwned()

    @validates_schema
    def _metadata_limits(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("metadata") is not None:
            problems = metadata_problems(data["metadata"])
            if problems:
                raise ValidationError(problems)


class LeadCreateSchema(_LeadInputBase):
    name = name_field(required=True)
    email = email_field(required=True)
    phone = phone_field()
    source = source_field()
    status = fields.String(
        load_default="new",
        metadata={"description": "Initial status (default `new`).", "example": "new"},
        **STATUS,
    )
    metadata = fields.Dict(
        keys=fields.String(),
        metadata={
            "description": "Free-form object, stored natively and returned exactly as "
            "stored. " + METADATA_RULES,
            "maxProperties": MAX_KEYS_PER_OBJECT,
            "example": {"utm_source": "google", "interests": ["product_a"]},
        },
    )


class LeadUpdateSchema(_LeadInputBase):
    name = name_field()
    email = email_field()
    phone = phone_field()
    source = source_field()
    status = fields.String(
        metadata={
            "description": "New status; a status different from the current one is "
            "appended to statusHistory.",
            "example": "contacted",
        },
        **STATUS,
    )
    metadata = fields.Dict(
        keys=fields.String(),
        metadata={
            "description": "JSON Merge Patch (RFC 7386) into the stored metadata: new keys "
            "are added, existing keys replaced, null removes a key, objects merge "
            "recursively, arrays are replaced whole. The merged result must keep the "
            "metadata rules: " + METADATA_RULES,
            "maxProperties": MAX_KEYS_PER_OBJECT,
            "example": {"plan": "pro", "utm_source": None},
        },
    )
