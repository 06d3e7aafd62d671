"""The documented response shapes: the OpenAPI document's schemas and the response tests'.

Every field a response always carries is ``required``; nullable ones say so.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from marshmallow import EXCLUDE, fields

from ..leads.schemas import STATUS, CamelSchema

JSON_OPTIONS = orjson.OPT_NON_STR_KEYS


def ok(data: Any, status: int = 200, **extra: Any) -> web.Response:
    """The success envelope: ``{"success": true, **extra, "data": data}``, encoded by
    orjson (a lead's body and its ETag each cost a fifth of the standard library's)."""
    body = orjson.dumps({"success": True, **extra, "data": data}, option=JSON_OPTIONS)
    return web.Response(body=body, status=status, content_type="application/json", charset="utf-8")


TIMESTAMP = {"format": "date-time", "example": "2024-01-15T10:30:00.000Z"}


def _doc(description: str, **more: Any) -> dict[str, Any]:
    return {"description": description, **more}


class StatusChangeSchema(CamelSchema):
    status = fields.String(required=True, metadata=_doc("The status entered."), **STATUS)
    changed_at = fields.String(
        required=True, metadata=_doc("When it was entered (UTC, milliseconds).", **TIMESTAMP)
    )


class LeadSchema(CamelSchema):
    class Meta:
        unknown = EXCLUDE

    id = fields.String(
        required=True,
        metadata=_doc(
            "The lead's id: `lead_` and 16 lowercase hex digits.",
            pattern="^lead_[0-9a-f]{16}$",
            example="lead_1234567890abcdef",
        ),
    )
    chatbot_id = fields.String(
        required=True,
        metadata=_doc(
            "The chatbot the lead belongs to.",
            pattern="^cb_[0-9a-f]{16}$",
            example="cb_1234567890abcdef",
        ),
    )
    workspace_id = fields.String(
        required=True,
        metadata=_doc(
            "The chatbot's workspace.",
            pattern="^ws_[0-9a-f]{16}$",
            example="ws_0123456789abcdef",
        ),
    )
    name = fields.String(
        required=True, metadata=_doc("Name, trimmed (1-200 characters).", example="John Doe")
    )
    email = fields.String(
        required=True,
        metadata=_doc("Email address as sent.", format="email", example="john.doe@example.com"),
    )
    phone = fields.String(
        required=True,
        allow_none=True,
        metadata=_doc("Phone number, trimmed; null when none.", example="+1-555-123-4567"),
    )
    source = fields.String(
        required=True,
        allow_none=True,
        metadata=_doc("Where the lead came from, trimmed; null when none.", example="website"),
    )
    status = fields.String(required=True, metadata=_doc("Current status."), **STATUS)
    metadata = fields.Dict(
        required=True,
        metadata=_doc(
            "The lead's metadata exactly as stored (numbers stay numbers, arrays stay "
            "arrays, nesting is kept); `{}` when none.",
            example={"utm_source": "google", "interests": ["product_a"]},
        ),
    )
    status_history = fields.List(
        fields.Nested(StatusChangeSchema),
        required=True,
        metadata=_doc(
            "Every status the lead has had, oldest first, each with the time it was "
            "entered (the most recent 100). Not in lists."
        ),
    )
    created_at = fields.String(
        required=True, metadata=_doc("When the lead was created (UTC).", **TIMESTAMP)
    )
    updated_at = fields.String(
        required=True,
        metadata=_doc(
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
        metadata=_doc("The page number (page/limit paging); null on a cursor page.", example=1),
    )
    limit = fields.Integer(required=True, metadata=_doc("Leads per page.", example=10))
    total = fields.Integer(
        required=True,
        metadata=_doc(
            "Leads matching the filters (exact, unless totalExact is false).", example=25
        ),
    )
    total_pages = fields.Integer(
        required=True, metadata=_doc("ceil(total / limit); 0 when total is 0.", example=3)
    )
    has_next = fields.Boolean(
        required=True, metadata=_doc("Whether a page follows this one.", example=True)
    )
    has_prev = fields.Boolean(
        required=True,
        metadata=_doc(
            "Whether a page precedes this one (always true on a cursor page).", example=False
        ),
    )
    next_cursor = fields.String(
        required=True,
        allow_none=True,
        metadata=_doc(
            "Pass as `cursor` for the page after this one; null on the last page.",
            example=None,
        ),
    )
    total_exact = fields.Boolean(
        metadata=_doc(
            "Present (false) only when the deployment bounds counting (list.max_count) "
            "and the count reached the bound: total is then that bound."
        )
    )


class LeadListSchema(CamelSchema):
    leads = fields.List(
        fields.Nested(LeadSummarySchema),
        required=True,
        metadata=_doc("The page's leads, in the requested order (without statusHistory)."),
    )
    pagination = fields.Nested(PaginationSchema, required=True, metadata=_doc("Where the page is."))


_SUCCESS = _doc("Always true on a 2xx.", example=True)


class LeadEnvelopeSchema(CamelSchema):
    success = fields.Boolean(required=True, metadata=_SUCCESS)
    data = fields.Nested(LeadSchema, required=True, metadata=_doc("The lead."))


class LeadListEnvelopeSchema(CamelSchema):
    success = fields.Boolean(required=True, metadata=_SUCCESS)
    data = fields.Nested(LeadListSchema, required=True, metadata=_doc("A page of leads."))


class DeletedSchema(CamelSchema):
    id = fields.String(
        required=True,
        metadata=_doc("The deleted lead's id.", example="lead_1234567890abcdef"),
    )
    deleted_at = fields.String(required=True, metadata=_doc("When it was deleted.", **TIMESTAMP))


class DeleteEnvelopeSchema(CamelSchema):
    success = fields.Boolean(required=True, metadata=_SUCCESS)
    message = fields.String(
        required=True,
        metadata=_doc("A human-readable confirmation.", example="Lead deleted successfully"),
    )
    data = fields.Nested(DeletedSchema, required=True, metadata=_doc("What was deleted, and when."))


ERROR_CODES = (
    "VALIDATION_ERROR",
    "INVALID_JSON",
    "CONFIRMATION_REQUIRED",
    "UNAUTHORIZED",
    "CHATBOT_NOT_FOUND",
    "LEAD_NOT_FOUND",
    "WEBHOOK_NOT_FOUND",
    "NOT_FOUND",
    "METHOD_NOT_ALLOWED",
    "PAYLOAD_TOO_LARGE",
    "UNSUPPORTED_MEDIA_TYPE",
    "RATE_LIMITED",
    "IDEMPOTENCY_IN_PROGRESS",
    "PRECONDITION_FAILED",
    "IDEMPOTENCY_KEY_REUSED",
    "SERVICE_UNAVAILABLE",
    "INTERNAL_ERROR",
)


class ErrorSchema(CamelSchema):
    code = fields.String(
        required=True,
        metadata=_doc(
            "Machine-readable error code; new codes may be added. Known: "
            + ", ".join(f"`{c}`" for c in ERROR_CODES)
            + ".",
            example="VALIDATION_ERROR",
        ),
    )
    message = fields.String(
        required=True, metadata=_doc("Human-readable explanation.", example="Invalid data")
    )
    details = fields.Dict(
        metadata=_doc(
            "Present when there is something field-level to say: each offending field, "
            "parameter or metadata path, with its messages.",
            example={"email": ["Not a valid email address."]},
        ),
    )
    request_id = fields.String(
        required=True,
        metadata=_doc(
            "The request's id, as in the X-Request-Id header.",
            example="3f2c9a7e1b5d4c8e9f0a1b2c3d4e5f60",
        ),
    )


class ErrorEnvelopeSchema(CamelSchema):
    success = fields.Boolean(
        required=True, metadata=_doc("Always false on an error.", example=False)
    )
    error = fields.Nested(ErrorSchema, required=True, metadata=_doc("What went wrong."))


class BatchItemErrorSchema(CamelSchema):
    code = fields.String(required=True, metadata=_doc("Error code.", example="VALIDATION_ERROR"))
    message = fields.String(required=True, metadata=_doc("Explanation.", example="Invalid data"))
    details = fields.Dict(
        metadata=_doc(
            "Each offending field of the item, with its messages.",
            example={"email": ["Not a valid email address."]},
        )
    )


class BatchResultSchema(CamelSchema):
    index = fields.Integer(required=True, metadata=_doc("The item's position in `leads`."))
    status = fields.Integer(
        required=True,
        metadata=_doc(
            "201 created, 200 merged into an existing lead (upsert), or the 4xx status "
            "the item alone would have had.",
            example=201,
        ),
    )
    lead = fields.Nested(LeadSchema, metadata=_doc("The lead as written (on 200 and 201)."))
    error = fields.Nested(BatchItemErrorSchema, metadata=_doc("Why the item failed (on 4xx)."))


class BatchSchema(CamelSchema):
    results = fields.List(
        fields.Nested(BatchResultSchema), required=True, metadata=_doc("One per item, in order.")
    )
    created = fields.Integer(required=True, metadata=_doc("Items that created a lead."))
    updated = fields.Integer(required=True, metadata=_doc("Items merged into a lead."))
    failed = fields.Integer(required=True, metadata=_doc("Items refused."))


class BatchEnvelopeSchema(CamelSchema):
    success = fields.Boolean(required=True, metadata=_SUCCESS)
    data = fields.Nested(BatchSchema, required=True, metadata=_doc("The batch's results."))
