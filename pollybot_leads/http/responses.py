"""The success envelope, and the documented shapes every feature shares: the error envelope.

Every field a response always carries is ``required``; nullable ones say so.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from marshmallow import fields

from .fields import CamelSchema

JSON_OPTIONS = orjson.OPT_NON_STR_KEYS
JSON_CONTENT_TYPE = "application/json; charset=utf-8"


def ok_body(data: Any, **extra: Any) -> bytes:
    """The success envelope's bytes: ``{"success": true, **extra, "data": data}``, encoded
    by orjson (a lead's body and its ETag each cost a fifth of the standard library's)."""
    return orjson.dumps({"success": True, **extra, "data": data}, option=JSON_OPTIONS)


def ok(data: Any, status: int = 200, **extra: Any) -> web.Response:
    """The success envelope as a response."""
    body = ok_body(data, **extra)
    return web.Response(body=body, status=status, content_type="application/json", charset="utf-8")


TIMESTAMP = {"format": "date-time", "example": "2024-01-15T10:30:00.000Z"}


def doc(description: str, **more: Any) -> dict[str, Any]:
    return {"description": description, **more}


SUCCESS = doc("Always true on a 2xx.", example=True)


ERROR_CODES = (
    "VALIDATION_ERROR",
    "INVALID_JSON",
    "CONFIRMATION_REQUIRED",
    "UNAUTHORIZED",
    "CHATBOT_NOT_FOUND",
    "LEAD_NOT_FOUND",
    "LEAD_MERGED",
    "WEBHOOK_NOT_FOUND",
    "WORKSPACE_NOT_FOUND",
    "API_KEY_NOT_FOUND",
    "AUDIT_RECORD_NOT_FOUND",
    "NOT_FOUND",
    "METHOD_NOT_ALLOWED",
    "PAYLOAD_TOO_LARGE",
    "UNSUPPORTED_MEDIA_TYPE",
    "RATE_LIMITED",
    "IDEMPOTENCY_IN_PROGRESS",
    "PRECONDITION_FAILED",
    "IDEMPOTENCY_KEY_REUSED",
    "LEAD_DELETED",
    "SERVICE_UNAVAILABLE",
    "INTERNAL_ERROR",
)


class ErrorSchema(CamelSchema):
    code = fields.String(
        required=True,
        metadata=doc(
            "Machine-readable error code; new codes may be added. Known: "
            + ", ".join(f"`{c}`" for c in ERROR_CODES)
            + ".",
            example="VALIDATION_ERROR",
        ),
    )
    message = fields.String(
        required=True, metadata=doc("Human-readable explanation.", example="Invalid data")
    )
    details = fields.Dict(
        metadata=doc(
            "Present when there is something field-level to say: each offending field, "
            "parameter or metadata path, with its messages.",
            example={"email": ["Not a valid email address."]},
        ),
    )
    request_id = fields.String(
        required=True,
        metadata=doc(
            "The request's id, as in the X-Request-Id header.",
            example="3f2c9a7e1b5d4c8e9f0a1b2c3d4e5f60",
        ),
    )


class ErrorEnvelopeSchema(CamelSchema):
    success = fields.Boolean(
        required=True, metadata=doc("Always false on an error.", example=False)
    )
    error = fields.Nested(ErrorSchema, required=True, metadata=doc("What went wrong."))


def after_pagination(name: str, after: str, id_doc: dict[str, Any]) -> type[CamelSchema]:
    """The pagination of a list paged by the id of its last item (the query parameter
    ``after``, given back as ``next<After>``): its schema class, named ``name``."""
    next_name = "next_" + after
    attrs = {
        "limit": fields.Integer(required=True, metadata=doc("The page size.", example=100)),
        "has_more": fields.Boolean(required=True, metadata=doc("More follow.", example=False)),
        next_name: fields.String(
            required=True,
            allow_none=True,
            metadata=doc(f"`{after}` for the next page; null on the last.", **id_doc),
        ),
    }
    return type(name, (CamelSchema,), attrs)
