"""What each handler declares about itself for the OpenAPI document (``@Operation``:
summary, scope, parameters, body, responses with their headers and links, errors), and
what operations share (error groups and examples, parameter and header definitions,
path parameters, tags). ``openapi.py`` builds the document from them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from marshmallow import Schema

from ..errors import (
    AppError,
    ChatbotNotFound,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    InsufficientScope,
    InvalidJson,
    LeadDeleted,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)
from .context import ADMIN_SCOPE, SCOPES

SPEC_URL = "/api/docs/openapi.json"
REQUEST_ID_EXAMPLE = "3f2c9a7e1b5d4c8e9f0a1b2c3d4e5f60"

# --- errors: what each status means, and an example of each error -----------------------

ERROR_STATUS_DESCRIPTIONS = {
    400: "Invalid data, parameters or JSON (or, for a delete, no confirmation)",
    401: "Missing, malformed, unknown, expired or revoked API key",
    403: "The API key lacks the scope this operation needs (`details.required`), or is "
    "limited to chatbots and the operation is workspace-wide: nothing was done",
    404: "The chatbot (or lead) does not exist for this key (or the key is limited to "
    "other chatbots)",
    409: "A request with this Idempotency-Key is still running: retry after Retry-After",
    410: "The result kept for this Idempotency-Key held a lead since deleted: nothing was "
    "done (a new write needs a new key)",
    412: "If-Match does not match the lead's current ETag: nothing was changed",
    413: "Request body over the size limit (64 KiB by default)",
    415: "Request body is not application/json (UTF-8)",
    422: "This Idempotency-Key was used with a different method, path or body",
    429: "Rate limit exceeded: wait Retry-After seconds",
    503: "A backing store could not be used in time: retry after Retry-After seconds",
}
# An error's example is its class's code and message, except where a client is more
# likely to see something else.
EXAMPLE_OVERRIDES: dict[type[AppError], dict[str, Any]] = {
    ValidationFailed: {"details": {"email": ["Not a valid email address."]}},
    InsufficientScope: {"details": {"required": ["leads:write"]}},
    InvalidJson: {"message": "Request body is not valid JSON"},
    PayloadTooLarge: {"message": "Request body is over 65536 bytes"},
}
# Errors that come together (each operation names the groups and errors it answers with).
# Any request: no valid key, no tokens left, no store in time.
WORKSPACE_ERRORS = (Unauthorized, InsufficientScope, RateLimited, ServiceUnavailable)
# Any request under /chatbots/{chatbotId}: also a chatbot that is not the key's.
CHATBOT_ERRORS = (
    Unauthorized,
    InsufficientScope,
    ChatbotNotFound,
    RateLimited,
    ServiceUnavailable,
)
# Any request with a JSON body.
BODY_ERRORS = (ValidationFailed, InvalidJson, PayloadTooLarge, UnsupportedMediaType)
# Any request with an Idempotency-Key.
IDEMPOTENCY_ERRORS = (IdempotencyInProgress, IdempotencyKeyReused)
# A lead write's request with one: its kept result is dropped when a lead it holds is
# deleted, and a retry is then a 410.
LEAD_IDEMPOTENCY_ERRORS = (*IDEMPOTENCY_ERRORS, LeadDeleted)

# --- request parameters operations share --------------------------------------------------

# A delete's confirmation (or instead the header X-Confirm-Delete: true).
CONFIRM_PARAMETER: dict[str, Any] = {
    "in": "query",
    "name": "confirm",
    "required": True,
    "schema": {"type": "string", "enum": ["true"]},
    "description": "Must be `true`. Alternative: the header `X-Confirm-Delete: true`.",
    "example": "true",
}
IDEMPOTENCY_KEY: dict[str, Any] = {
    "in": "header",
    "name": "Idempotency-Key",
    "required": False,
    "description": "1-255 printable ASCII characters, unique per intended change (a UUID). "
    "The first result is kept at least 24 hours and replayed, byte for byte with "
    "`Idempotent-Replayed: true`, to every retry with the same key, method, path and body; "
    "a different request with the key is a 422, a retry while the first still runs a 409. "
    "A lead write's kept result is dropped when a lead it holds is deleted: a retry is then "
    "a 410 `LEAD_DELETED` and does nothing. Keys are scoped to the API key.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
    "example": "8e03978e-40d5-43e8-bc93-6894a57f9324",
}
IF_MATCH: dict[str, Any] = {
    "in": "header",
    "name": "If-Match",
    "required": False,
    "description": "Change the lead only if its current ETag is one of these (or `*`); "
    "otherwise 412 and nothing changes. Checked atomically with the write.",
    "schema": {"type": "string"},
    "example": '"3f2c9a7e1b5d4c8e9f0a1b2c3d4e5f60"',
}
IF_NONE_MATCH: dict[str, Any] = {
    "in": "header",
    "name": "If-None-Match",
    "required": False,
    "description": "A 304 with no body when the lead's current ETag is one of these.",
    "schema": {"type": "string"},
    "example": '"3f2c9a7e1b5d4c8e9f0a1b2c3d4e5f60"',
}
PATH_PARAMETERS = {  # name: (description, pattern, example)
    "chatbotId": ("The chatbot's id", "^cb_[0-9a-f]{16}$", "cb_1234567890abcdef"),
    "leadId": ("The lead's id", "^lead_[0-9a-f]{16}$", "lead_1234567890abcdef"),
    "webhookId": ("The webhook endpoint's id", "^wh_[0-9a-f]{16}$", "wh_0123456789abcdef"),
    "suppressionId": ("The suppression's id", "^sup_[0-9a-f]{16}$", "sup_0123456789abcdef"),
    "workspaceId": ("The workspace's id", "^ws_[0-9a-f]{16}$", "ws_1234567890abcdef"),
    "keyId": ("The API key's id", "^key_[0-9a-f]{16}$", "key_1234567890abcdef"),
}

# --- response headers ----------------------------------------------------------------------

_INT_HEADER = {"schema": {"type": "integer", "minimum": 0}}
_ABSENT = " (absent when rate limiting is off, and when the key was not yet charged)"
RATE_LIMIT_HEADERS = {
    "X-RateLimit-Limit": {"description": "Bucket capacity" + _ABSENT, **_INT_HEADER},
    "X-RateLimit-Remaining": {"description": "Whole tokens left" + _ABSENT, **_INT_HEADER},
    "X-RateLimit-Reset": {
        "description": "Seconds until the bucket is full" + _ABSENT,
        **_INT_HEADER,
    },
}
REQUEST_ID_HEADER = {
    "X-Request-Id": {
        "description": "The request's id: the client's own X-Request-Id when it sent a sane "
        "one (1-128 of A-Z a-z 0-9 . _ : -), else a generated one",
        "required": True,
        "schema": {"type": "string"},
    }
}
RETRY_AFTER = {
    "Retry-After": {
        "description": "Whole seconds to wait before retrying",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}
WWW_AUTHENTICATE = {
    "WWW-Authenticate": {
        "description": '`Bearer realm="pollybot-leads"`',
        "required": True,
        "schema": {"type": "string"},
    }
}
ETAG = {
    "ETag": {
        "description": "The lead's version (strong); it changes exactly when the lead does",
        "required": True,
        "schema": {"type": "string"},
    }
}
REPLAYED = {
    "Idempotent-Replayed": {
        "description": "`true` when this is the kept result of an earlier request with the "
        "same Idempotency-Key",
        "schema": {"type": "string", "enum": ["true"]},
    }
}
LOCATION = {
    "Location": {
        "description": "The new resource's URL",
        "required": True,
        "schema": {"type": "string"},
    }
}

# --- the document as a whole ---------------------------------------------------------------

INFO = {
    "description": "Create, list, search, update and delete a chatbot's leads. Every "
    "response is the envelope `{success, data}` or `{success: false, error: {code, message, "
    "details?, requestId}}` and carries X-Request-Id.",
    "license": {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"},
}
BEARER_AUTH = {
    "type": "http",
    "scheme": "bearer",
    "bearerFormat": "sk-workspace_<secret>",
    "description": "A workspace API key: `Authorization: Bearer sk-workspace_…`.",
}
ADMIN_AUTH = {
    "type": "http",
    "scheme": "bearer",
    "bearerFormat": "sk-admin_<secret>",
    "description": "An admin key of the platform running the service, made with "
    "`pollybot-leads admin create-admin-key`: `Authorization: Bearer sk-admin_…`. It works "
    "only on `/api/v1/admin/…`, and only it does.",
}
TAGS = [
    {
        "name": "leads",
        "description": "A chatbot's leads: create, list and search, read, update, delete. "
        "Every operation needs a workspace API key whose workspace owns the chatbot.",
    },
    {
        "name": "events",
        "description": "A chatbot's lead changes in order, kept 30 days by default: the feed a "
        "consumer catches up from, and the bodies of webhook deliveries.",
    },
    {
        "name": "webhooks",
        "description": "The workspace's webhook endpoints (managed with any key of the "
        "workspace): signed deliveries of every lead change, retried for 3 days, with a "
        "delivery log and replay.",
    },
    {
        "name": "privacy",
        "description": "Erasure on request: a person's leads removed from every chatbot of "
        "the workspace by email or phone, and the suppression list that keeps them from "
        "being captured again (kept as keyed hashes, never the address).",
    },
    {
        "name": "admin",
        "description": "For the platform running the service: workspaces, chatbots and API "
        "keys provisioned and governed over HTTP, deletions run as background jobs, and an "
        "audit of admin actions and lead deletions. Needs an admin key.",
    },
]

# --- declarations ---------------------------------------------------------------------------

_Handler = TypeVar("_Handler", bound=Callable[..., Any])
_DECLARED = "__openapi_operation__"  # the attribute @Operation sets on a handler


@dataclass(frozen=True)
class Link:
    """From a response to another operation, with where that one's parameters come from."""

    operation_id: str
    description: str
    parameters: Mapping[str, str]


@dataclass(frozen=True)
class Response:
    """A response that is not an error: a JSON ``schema``, other ``content``, or none."""

    description: str
    schema: type[Schema] | None = None
    content: Mapping[str, Any] | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    links: tuple[Link, ...] = ()


@dataclass(frozen=True)
class Body:
    """A JSON request body. ``min_properties=1``: an empty object is refused.
    ``one_of``: groups of fields of which exactly one must be sent."""

    schema: type[Schema]
    example: Mapping[str, Any]
    min_properties: int | None = None
    one_of: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Operation:
    """Everything the document says about one operation; decorates its handler.

    ``parameters`` are the explicit query parameters and the request headers (path
    parameters come from the route, ``query`` is a schema of query parameters). Error
    statuses come from ``errors``; ``error_descriptions`` words one differently.
    """

    operation_id: str
    tag: str
    summary: str
    description: str
    # The key scope it needs (context.SCOPES): enforced by accounts/auth.py for every
    # route, and shown in the document (x-required-scopes, and its description).
    scope: str
    responses: Mapping[int, Response]
    errors: tuple[type[AppError], ...]
    parameters: tuple[Mapping[str, Any], ...] = ()
    query: type[Schema] | None = None
    body: Body | None = None
    error_descriptions: Mapping[int, str] = field(default_factory=dict)

    def __call__(self, handler: _Handler) -> _Handler:
        if self.scope not in SCOPES and self.scope != ADMIN_SCOPE:
            raise ValueError(f"{self.operation_id}: unknown scope {self.scope!r}")
        setattr(handler, _DECLARED, self)
        return handler


def declared_operation(handler: Any) -> Operation | None:
    """What a route's handler declared (None: nothing)."""
    op = getattr(handler, _DECLARED, None)
    return op if isinstance(op, Operation) else None


def required_scope(handler: Any) -> str | None:
    """The scope a route's handler declared (None: it declared none)."""
    op = declared_operation(handler)
    return op.scope if op is not None else None
