"""Marshmallow schemas: request validation (load) and the documented response shapes."""

from __future__ import annotations

import re
from typing import Any

from marshmallow import (
    EXCLUDE,
    RAISE,
    Schema,
    ValidationError,
    fields,
    validate,
    validates_schema,
)

from ..domain.leads import (
    EMAIL_MAX,
    NAME_MAX,
    PHONE_MAX,
    PHONE_RE,
    SOURCE_MAX,
    STATUSES,
)
from ..domain.metadata import metadata_problems

SERVER_OWNED_MESSAGE = "Set by the server; it cannot be sent."
_SNAKE = re.compile(r"_([a-z])")


def camel(name: str) -> str:
    return _SNAKE.sub(lambda m: m.group(1).upper(), name)


class CamelSchema(Schema):
    """Field ``created_at`` is ``createdAt`` on the wire; unknown fields are errors."""

    class Meta:
        unknown = RAISE

    def on_bind_field(self, field_name: str, field_obj: fields.Field) -> None:
        field_obj.data_key = field_obj.data_key or camel(field_name)


class TrimmedString(fields.String):
    """A string with surrounding whitespace removed before its length is checked."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        return super()._deserialize(value, attr, data, **kwargs).strip()


class ServerOwned(fields.Raw):
    """A field only the server sets: sending it at all is a validation error."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(load_only=True, **kwargs)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        raise ValidationError(SERVER_OWNED_MESSAGE)


def _phone(value: str) -> None:
    if not PHONE_RE.match(value) or not any(ch.isdigit() for ch in value):
        raise ValidationError("Use digits, spaces and + - ( ) . only.")


NAME = dict(validate=validate.Length(1, NAME_MAX))
EMAIL = dict(validate=validate.Length(max=EMAIL_MAX))
PHONE = dict(validate=[validate.Length(1, PHONE_MAX), _phone])
SOURCE = dict(validate=validate.Length(1, SOURCE_MAX))
STATUS = dict(validate=validate.OneOf(STATUSES))
METADATA_DOC = {
    "description": "Free-form object stored natively and returned exactly as stored. Keys "
    "1-100 characters, not starting with '$', without '.' or NUL; at most 100 keys per "
    "object; nesting depth at most 5; at most 16 KiB serialized.",
}


class _LeadInputBase(CamelSchema):
    id = ServerOwned()
    chatbot_id = ServerOwned()
    workspace_id = ServerOwned()
    created_at = ServerOwned()
    updated_at = ServerOwned()
    status_history = ServerOwned()

    @validates_schema
    def _metadata_limits(self, data: dict, **kwargs: Any) -> None:
        if data.get("metadata") is not None:
            problems = metadata_problems(data["metadata"])
            if problems:
                raise ValidationError(problems)


class LeadCreateSchema(_LeadInputBase):
    name = TrimmedString(required=True, metadata={"example": "John Doe"}, **NAME)
    email = fields.Email(required=True, metadata={"example": "john.doe@example.com"}, **EMAIL)
    phone = TrimmedString(allow_none=True, metadata={"example": "+1-555-123-4567"}, **PHONE)
    source = TrimmedString(allow_none=True, metadata={"example": "website"}, **SOURCE)
    status = fields.String(load_default="new", metadata={"example": "new"}, **STATUS)
    metadata = fields.Dict(
        keys=fields.String(),
        metadata={**METADATA_DOC, "example": {"utm_source": "google"}},
    )


class LeadUpdateSchema(_LeadInputBase):
    name = TrimmedString(metadata={"example": "John Doe"}, **NAME)
    email = fields.Email(metadata={"example": "john.doe@example.com"}, **EMAIL)
    phone = TrimmedString(allow_none=True, **PHONE)
    source = TrimmedString(allow_none=True, **SOURCE)
    status = fields.String(metadata={"example": "contacted"}, **STATUS)
    metadata = fields.Dict(
        keys=fields.String(),
        metadata={
            **METADATA_DOC,
            "description": "JSON Merge Patch (RFC 7386) into the stored metadata: new keys "
            "are added, existing keys replaced, null removes a key, objects merge "
            "recursively, arrays are replaced whole.",
            "example": {"plan": "pro", "utm_source": None},
        },
    )


# --- responses (documentation and response-shape tests) -------------------------------

TIMESTAMP = {"format": "date-time", "example": "2024-01-15T10:30:00.000Z"}


class StatusChangeSchema(CamelSchema):
    status = fields.String(**STATUS)
    changed_at = fields.String(metadata=TIMESTAMP)


class LeadSchema(CamelSchema):
    class Meta:
        unknown = EXCLUDE

    id = fields.String(metadata={"example": "lead_1234567890abcdef"})
    chatbot_id = fields.String(metadata={"example": "cb_1234567890abcdef"})
    workspace_id = fields.String(metadata={"example": "ws_0123456789abcdef"})
    name = fields.String(metadata={"example": "John Doe"})
    email = fields.String(metadata={"example": "john.doe@example.com"})
    phone = fields.String(allow_none=True, metadata={"example": "+1-555-123-4567"})
    source = fields.String(allow_none=True, metadata={"example": "website"})
    status = fields.String(**STATUS)
    metadata = fields.Dict(metadata={"example": {"utm_source": "google"}})
    status_history = fields.List(fields.Nested(StatusChangeSchema))
    created_at = fields.String(metadata=TIMESTAMP)
    updated_at = fields.String(metadata=TIMESTAMP)


class LeadSummarySchema(LeadSchema):
    class Meta:
        exclude = ("status_history",)


class PaginationSchema(CamelSchema):
    page = fields.Integer(allow_none=True, metadata={"example": 1})
    limit = fields.Integer(metadata={"example": 10})
    total = fields.Integer(metadata={"example": 25})
    total_pages = fields.Integer(metadata={"example": 3})
    has_next = fields.Boolean(metadata={"example": True})
    has_prev = fields.Boolean(metadata={"example": False})
    total_exact = fields.Boolean(
        metadata={
            "description": "Present (false) only when the deployment bounds counting "
            "(list.max_count) and the count reached the bound: total is then that bound."
        }
    )
    next_cursor = fields.String(
        allow_none=True,
        metadata={"description": "Pass as `cursor` for the page after this one; null at the end."},
    )


class LeadListSchema(CamelSchema):
    leads = fields.List(fields.Nested(LeadSummarySchema))
    pagination = fields.Nested(PaginationSchema)


class LeadEnvelopeSchema(CamelSchema):
    success = fields.Boolean(metadata={"example": True})
    data = fields.Nested(LeadSchema)


class LeadListEnvelopeSchema(CamelSchema):
    success = fields.Boolean(metadata={"example": True})
    data = fields.Nested(LeadListSchema)


class DeletedSchema(CamelSchema):
    id = fields.String(metadata={"example": "lead_1234567890abcdef"})
    deleted_at = fields.String(metadata=TIMESTAMP)


class DeleteEnvelopeSchema(CamelSchema):
    success = fields.Boolean(metadata={"example": True})
    message = fields.String(metadata={"example": "Lead deleted successfully"})
    data = fields.Nested(DeletedSchema)


class ErrorSchema(CamelSchema):
    code = fields.String(metadata={"example": "VALIDATION_ERROR"})
    message = fields.String(metadata={"example": "Invalid data"})
    details = fields.Dict(
        metadata={"example": {"email": ["Not a valid email address."]}},
    )
    request_id = fields.String(metadata={"example": "3f2c9a7e1b5d4c8e9f0a1b2c3d4e5f60"})


class ErrorEnvelopeSchema(CamelSchema):
    success = fields.Boolean(metadata={"example": False})
    error = fields.Nested(ErrorSchema)
