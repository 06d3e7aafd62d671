"""The documented shapes of the lead routes' responses (the OpenAPI document's schemas and
the response tests').

Every field a response always carries is ``required``; nullable ones say so.
"""

from __future__ import annotations

from marshmallow import EXCLUDE, fields

from ..http.fields import CamelSchema
from ..http.responses import SUCCESS, TIMESTAMP, doc
from .schemas import STATUS


class StatusChangeSchema(CamelSchema):
    status = fields.String(required=True, metadata=doc("The status entered."), **STATUS)
    changed_at = fields.String(
        required=True, metadata=doc("When it was entered (UTC, milliseconds).", **TIMESTAMP)
    )


class LeadSchema(CamelSchema):
    class Meta:
        unknown = EXCLUDE

    id = fields.String(
        required=True,
        metadata=doc(
            "The lead's id: `lead_` and 16 lowercase hex digits.",
            pattern="^lead_[0-9a-f]{16}$",
            example="lead_1234567890abcdef",
        ),
    )
    chatbot_id = fields.String(
        required=True,
        metadata=doc(
            "The chatbot the lead belongs to.",
            pattern="^cb_[0-9a-f]{16}$",
            example="cb_1234567890abcdef",
        ),
    )
    workspace_id = fields.String(
        required=True,
        metadata=doc(
            "The chatbot's workspace.",
            pattern="^ws_[0-9a-f]{16}$",
            example="ws_0123456789abcdef",
        ),
    )
    name = fields.String(
        required=True, metadata=doc("Name, trimmed (1-200 characters).", example="John Doe")
    )
    email = fields.String(
        required=True,
        metadata=doc("Email address as sent.", format="email", example="john.doe@example.com"),
    )
    phone = fields.String(
        required=True,
        allow_none=True,
        metadata=doc("Phone number, trimmed; null when none.", example="+1-555-123-4567"),
    )
    phone_e164 = fields.String(
        required=True,
        allow_none=True,
        metadata=doc(
            "Read-only: `phone` in E.164, parsed by a maintained phone-number library "
            "(libphonenumber's rules); null when there is no phone or it does not parse (a "
            "number without `+` does not yet: chatbots have no default region).",
            pattern=r"^\+[1-9][0-9]{1,14}$",
            example="+15551234567",
        ),
    )
    external_id = fields.String(
        required=True,
        allow_none=True,
        metadata=doc(
            "The platform's own id of this person, unique within the chatbot; null when none.",
            example="crm-contact-8812",
        ),
    )
    source = fields.String(
        required=True,
        allow_none=True,
        metadata=doc("Where the lead came from, trimmed; null when none.", example="website"),
    )
    status = fields.String(required=True, metadata=doc("Current status."), **STATUS)
    metadata = fields.Dict(
        required=True,
        metadata=doc(
            "The lead's metadata exactly as stored (numbers stay numbers, arrays stay "
            "arrays, nesting is kept); `{}` when none.",
            example={"utm_source": "google", "interests": ["product_a"]},
        ),
    )
    status_history = fields.List(
        fields.Nested(StatusChangeSchema),
        required=True,
        metadata=doc(
            "Every status the lead has had, oldest first, each with the time it was "
            "entered (the most recent 100). Not in lists."
        ),
    )
    created_at = fields.String(
        required=True, metadata=doc("When the lead was created (UTC).", **TIMESTAMP)
    )
    updated_at = fields.String(
        required=True,
        metadata=doc(
            "When the lead last changed (UTC); moves forward on every update.", **TIMESTAMP
        ),
    )


class LeadSummarySchema(LeadSchema):
    class Meta:
        exclude = ("status_history",)


class PaginationSchema(CamelSchema):
    page = fields.Integer(
        required=True,
        allow_none=True,
        metadata=doc("The page number (page/limit paging); null on a cursor page.", example=1),
    )
    limit = fields.Integer(required=True, metadata=doc("Leads per page.", example=10))
    total = fields.Integer(
        required=True,
        metadata=doc("Leads matching the filters (exact, unless totalExact is false).", example=25),
    )
    total_pages = fields.Integer(
        required=True, metadata=doc("ceil(total / limit); 0 when total is 0.", example=3)
    )
    has_next = fields.Boolean(
        required=True, metadata=doc("Whether a page follows this one.", example=True)
    )
    has_prev = fields.Boolean(
        required=True,
        metadata=doc(
            "Whether a page precedes this one (always true on a cursor page).", example=False
        ),
    )
    next_cursor = fields.String(
        required=True,
        allow_none=True,
        metadata=doc(
            "Pass as `cursor` for the page after this one; null on the last page.",
            example=None,
        ),
    )
    total_exact = fields.Boolean(
        metadata=doc(
            "Present (false) only when the deployment bounds counting (list.max_count) "
            "and the count reached the bound: total is then that bound."
        )
    )


class LeadListSchema(CamelSchema):
    leads = fields.List(
        fields.Nested(LeadSummarySchema),
        required=True,
        metadata=doc("The page's leads, in the requested order (without statusHistory)."),
    )
    pagination = fields.Nested(PaginationSchema, required=True, metadata=doc("Where the page is."))


class LeadEnvelopeSchema(CamelSchema):
    success = fields.Boolean(required=True, metadata=SUCCESS)
    data = fields.Nested(LeadSchema, required=True, metadata=doc("The lead."))


class LeadListEnvelopeSchema(CamelSchema):
    success = fields.Boolean(required=True, metadata=SUCCESS)
    data = fields.Nested(LeadListSchema, required=True, metadata=doc("A page of leads."))


class DeletedSchema(CamelSchema):
    id = fields.String(
        required=True,
        metadata=doc("The deleted lead's id.", example="lead_1234567890abcdef"),
    )
    deleted_at = fields.String(required=True, metadata=doc("When it was deleted.", **TIMESTAMP))


class DeleteEnvelopeSchema(CamelSchema):
    success = fields.Boolean(required=True, metadata=SUCCESS)
    message = fields.String(
        required=True,
        metadata=doc("A human-readable confirmation.", example="Lead deleted successfully"),
    )
    data = fields.Nested(DeletedSchema, required=True, metadata=doc("What was deleted, and when."))


class BatchItemErrorSchema(CamelSchema):
    code = fields.String(required=True, metadata=doc("Error code.", example="VALIDATION_ERROR"))
    message = fields.String(required=True, metadata=doc("Explanation.", example="Invalid data"))
    details = fields.Dict(
        metadata=doc(
            "Each offending field of the item, with its messages.",
            example={"email": ["Not a valid email address."]},
        )
    )


class BatchResultSchema(CamelSchema):
    index = fields.Integer(required=True, metadata=doc("The item's position in `leads`."))
    status = fields.Integer(
        required=True,
        metadata=doc(
            "201 created, 200 merged into an existing lead (upsert), or the 4xx status "
            "the item alone would have had.",
            example=201,
        ),
    )
    lead = fields.Nested(LeadSchema, metadata=doc("The lead as written (on 200 and 201)."))
    error = fields.Nested(BatchItemErrorSchema, metadata=doc("Why the item failed (on 4xx)."))


class BatchSchema(CamelSchema):
    results = fields.List(
        fields.Nested(BatchResultSchema), required=True, metadata=doc("One per item, in order.")
    )
    created = fields.Integer(required=True, metadata=doc("Items that created a lead."))
    updated = fields.Integer(required=True, metadata=doc("Items merged into a lead."))
    failed = fields.Integer(required=True, metadata=doc("Items refused."))


class BatchEnvelopeSchema(CamelSchema):
    success = fields.Boolean(required=True, metadata=SUCCESS)
    data = fields.Nested(BatchSchema, required=True, metadata=doc("The batch's results."))
