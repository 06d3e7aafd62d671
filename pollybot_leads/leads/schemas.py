"""Marshmallow schemas: request validation (load) and the documented response shapes.

String rules are written once, as patterns: the server checks each value with
``re.fullmatch`` and the OpenAPI document publishes the same pattern (anchored), so the
document says exactly what the server accepts.
"""

from __future__ import annotations

from typing import Any, TypedDict

from marshmallow import (
    ValidationError,
    fields,
    validate,
    validates_schema,
)

from ..http.fields import (
    CONTROL_MESSAGE,
    CONTROL_RE,
    NON_BLANK,
    TEXT,
    CamelSchema,
    ServerOwned,
    Text,
    anchored,
)
from .metadata import (
    MAX_DEPTH,
    MAX_FILTER_VALUES,
    MAX_KEY_LENGTH,
    MAX_KEYS_PER_OBJECT,
    MAX_SERIALIZED_BYTES,
    metadata_problems,
)
from .rules import (
    EMAIL_MAX,
    EXTERNAL_ID_MAX,
    METADATA_FILTER_VALUE_MAX,
    NAME_MAX,
    PHONE_MAX,
    SOURCE_MAX,
    STATUSES,
)

PHONE_PATTERN = r"[0-9 +\-().]*[0-9][0-9 +\-().]*"


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
    """The lead's email field (``metadata`` given: its description instead)."""
    metadata = {
        "description": f"Email address, at most {EMAIL_MAX} characters. Stored as sent; "
        "the email filter and search compare it case-insensitively.",
        "example": "john.doe@example.com",
    }
    return EmailText(metadata=metadata | kwargs.pop("metadata", {}), **kwargs)


def phone_field(**kwargs: Any) -> Text:
    """The lead's phone field (``metadata`` given: its description instead)."""
    metadata = {
        "description": f"Phone number: at most {PHONE_MAX} characters of digits, spaces "
        "and `+-().`, at least one digit; surrounding spaces are removed. "
        "null: none.",
        "example": "+1-555-123-4567",
    }
    kwargs.setdefault("allow_none", True)
    return Text(
        max_length=PHONE_MAX,
        pattern=PHONE_PATTERN,
        pattern_message="Use digits, spaces and + - ( ) . only, with at least one digit.",
        trim=True,
        metadata=metadata | kwargs.pop("metadata", {}),
        **kwargs,
    )


def external_id_field(**kwargs: Any) -> Text:
    """The lead's external id: the platform's own id of the person (its contact id)."""
    metadata = {
        "description": f"The platform's own id of this person (a contact or conversation "
        f"id): 1-{EXTERNAL_ID_MAX} characters, no control characters, not blank; kept as "
        "sent. Unique within the chatbot: another lead with it is a 409 "
        "`DUPLICATE_EXTERNAL_ID`. null: none.",
        "example": "crm-contact-8812",
    }
    kwargs.setdefault("allow_none", True)
    return Text(
        max_length=EXTERNAL_ID_MAX,
        min_length=1,
        pattern=NON_BLANK,
        pattern_message="Must not be blank.",
        metadata=metadata | kwargs.pop("metadata", {}),
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
    f"in 64 bits; at most {MAX_SERIALIZED_BYTES // 1024} KiB as compact JSON; at most "
    f"{MAX_FILTER_VALUES:,} filterable values (what a `metadata.<key>` filter can match: "
    f"each top-level string of at most {METADATA_FILTER_VALUE_MAX} characters, number or "
    "boolean, and each such element of a top-level array; a value repeated under one key "
    "counts once). Values may be any JSON, control characters included. A broken rule is "
    "a 400 naming the path."
)


class _LeadInputBase(CamelSchema):
    id = ServerOwned()
    chatbot_id = ServerOwned()
    workspace_id = ServerOwned()
    created_at = ServerOwned()
    updated_at = ServerOwned()
    status_history = ServerOwned()
    phone_e164 = ServerOwned()

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
    external_id = external_id_field()
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
    external_id = external_id_field()
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
