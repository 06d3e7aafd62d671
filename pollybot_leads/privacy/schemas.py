"""The privacy routes' bodies, queries and answers."""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, validate, validates_schema

from ..http.fields import CamelSchema, QueryInteger, StrictBoolean, Text
from ..http.responses import SUCCESS, TIMESTAMP, after_pagination, doc
from ..leads.schemas import email_field, phone_field
from ..leads.suppressions import KINDS

_LEAD_ID = {"example": "lead_1234567890abcdef"}
_SUPPRESSION_ID = {"pattern": "^sup_[0-9a-f]{16}$", "example": "sup_0123456789abcdef"}


class ErasureSchema(CamelSchema):
    email = email_field(
        allow_none=False,
        metadata=doc(
            "Erase the leads with this email (compared case-insensitively). Give this or "
            "`phone`, not both.",
            example="former.customer@example.com",
        ),
    )
    phone = phone_field(
        allow_none=False,
        metadata=doc(
            "Erase the leads with this phone: the same number in E.164 where it parses "
            "(`+1 (415) 555-2671` and `+14155552671` are one), else the same digits. Give "
            "this or `email`, not both.",
            example="+1-415-555-0199",
        ),
    )
    suppress = StrictBoolean(
        load_default=False,
        metadata=doc(
            "Also keep a keyed hash of the address: from then on a create, upsert or batch "
            "item with it in this workspace is a 422 `SUPPRESSED`.",
            example=False,
        ),
    )
    confirm = StrictBoolean(
        required=True,
        metadata=doc(
            "Must be true: the erasure is permanent. Missing or false: 400 "
            "`CONFIRMATION_REQUIRED`, nothing done.",
            example=True,
            enum=[True],
        ),
    )

    @validates_schema
    def _one_address(self, data: dict[str, Any], **kwargs: Any) -> None:
        given = [name for name in ("email", "phone") if name in data]
        if len(given) != 1:
            message = "Give exactly one of email and phone."
            raise ValidationError({"email": [message], "phone": [message]})


class ErasureResultSchema(CamelSchema):
    erased = fields.Integer(
        required=True, metadata=doc("How many leads were deleted.", minimum=0, example=2)
    )
    lead_ids = fields.List(
        fields.String(metadata=_LEAD_ID),
        required=True,
        metadata=doc("Their ids (each has a `lead.deleted` event with reason `erasure`)."),
    )
    suppressed = fields.Boolean(
        required=True, metadata=doc("Whether the address is now suppressed.", example=False)
    )


class ErasureEnvelopeSchema(CamelSchema):
    success = fields.Boolean(required=True, metadata=SUCCESS)
    data = fields.Nested(ErasureResultSchema, required=True, metadata=doc("What was erased."))


class SuppressionQuerySchema(CamelSchema):
    limit = QueryInteger(
        load_default=100,
        validate=validate.Range(1, 1000),
        metadata=doc("Suppressions per page.", example=100),
    )
    after = Text(
        max_length=20,
        pattern="^sup_[0-9a-f]{16}$",
        pattern_message="Not a suppression id.",
        metadata=doc(
            "Continue after this one: the previous page's pagination.nextAfter.",
            example="sup_0123456789abcdef",
        ),
    )


class SuppressionSchema(CamelSchema):
    id = fields.String(required=True, metadata=doc("The suppression's id.", **_SUPPRESSION_ID))
    kind = fields.String(
        required=True,
        validate=validate.OneOf(KINDS),
        metadata=doc("What it suppresses: an email or a phone (never shown).", example="email"),
    )
    created_at = fields.String(required=True, metadata=doc("When it was made.", **TIMESTAMP))


SuppressionPaginationSchema = after_pagination(
    "SuppressionPaginationSchema", "after", _SUPPRESSION_ID
)


class SuppressionPageSchema(CamelSchema):
    suppressions = fields.List(
        fields.Nested(SuppressionSchema),
        required=True,
        metadata=doc("The workspace's suppressions, oldest id first."),
    )
    pagination = fields.Nested(
        SuppressionPaginationSchema, required=True, metadata=doc("Where the next page starts.")
    )


class SuppressionListEnvelopeSchema(CamelSchema):
    success = fields.Boolean(required=True, metadata=SUCCESS)
    data = fields.Nested(
        SuppressionPageSchema, required=True, metadata=doc("A page of suppressions.")
    )


class SuppressionDeletedSchema(CamelSchema):
    id = fields.String(required=True, metadata=doc("The lifted suppression.", **_SUPPRESSION_ID))
    deleted = fields.Boolean(required=True, metadata=doc("Always true.", example=True))


class SuppressionDeleteEnvelopeSchema(CamelSchema):
    success = fields.Boolean(required=True, metadata=SUCCESS)
    data = fields.Nested(SuppressionDeletedSchema, required=True, metadata=doc("What was lifted."))
