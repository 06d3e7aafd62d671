"""The OpenAPI 3 document: built by aiohttp-apispec from the handlers' decorators, finished
here, frozen, and served as bytes (nothing can change it after start-up).

aiohttp-apispec's OpenAPI 3 output still describes request bodies as ``in: body``
parameters and path parameters with a bare ``type``, both invalid in OpenAPI 3.
``finish_spec`` rewrites them and adds what the decorators cannot say: the bearer
scheme, tags, the errors each operation can answer with (with examples), response
headers, links between operations, and the update body's ``minProperties``.
"""

from __future__ import annotations

import copy
import json
import warnings
from typing import Any

from aiohttp import web
from aiohttp.web_exceptions import NotAppKeyWarning
from aiohttp_apispec import setup_aiohttp_apispec

from .. import __version__
from .responses import ErrorEnvelopeSchema

SPEC_URL = "/api/docs/openapi.json"
SPEC_APP_KEY = "swagger_dict"  # where aiohttp-apispec keeps the document (scripts read it)
REQUEST_ID_EXAMPLE = "3f2c9a7e1b5d4c8e9f0a1b2c3d4e5f60"

ERROR_STATUS_DESCRIPTIONS = {
    400: "Invalid data, parameters or JSON (or, for a delete, no confirmation)",
    401: "Missing, malformed, unknown or revoked API key",
    404: "The chatbot (or lead) does not exist for this key",
    409: "A request with this Idempotency-Key is still running: retry after Retry-After",
    412: "If-Match does not match the lead's current ETag: nothing was changed",
    413: "Request body over the size limit (64 KiB by default)",
    415: "Request body is not application/json (UTF-8)",
    422: "This Idempotency-Key was used with a different method, path or body",
    429: "Rate limit exceeded: wait Retry-After seconds",
    503: "A backing store could not be used in time: retry after Retry-After seconds",
}

# code: (status, message, details)
ERROR_EXAMPLES: dict[str, tuple[int, str, dict[str, Any] | None]] = {
    "VALIDATION_ERROR": (400, "Invalid data", {"email": ["Not a valid email address."]}),
    "INVALID_JSON": (400, "Request body is not valid JSON", None),
    "CONFIRMATION_REQUIRED": (
        400,
        "Deletion is permanent: confirm with ?confirm=true or X-Confirm-Delete: true",
        None,
    ),
    "UNAUTHORIZED": (401, "Invalid or missing API key", None),
    "CHATBOT_NOT_FOUND": (404, "Chatbot not found", None),
    "LEAD_NOT_FOUND": (404, "Lead not found", None),
    "WEBHOOK_NOT_FOUND": (404, "Webhook endpoint not found", None),
    "PAYLOAD_TOO_LARGE": (413, "Request body is over 65536 bytes", None),
    "UNSUPPORTED_MEDIA_TYPE": (415, "Content-Type must be application/json", None),
    "RATE_LIMITED": (429, "Too many requests", None),
    "IDEMPOTENCY_IN_PROGRESS": (
        409,
        "A request with this Idempotency-Key is still running; retry shortly",
        None,
    ),
    "PRECONDITION_FAILED": (
        412,
        "The lead has changed: If-Match does not match its current ETag",
        None,
    ),
    "IDEMPOTENCY_KEY_REUSED": (
        422,
        "This Idempotency-Key was used with a different method, path or body",
        None,
    ),
    "SERVICE_UNAVAILABLE": (503, "A backing store is unavailable", None),
}
_ALWAYS = ("UNAUTHORIZED", "CHATBOT_NOT_FOUND", "RATE_LIMITED", "SERVICE_UNAVAILABLE")
_BODY = ("VALIDATION_ERROR", "INVALID_JSON", "PAYLOAD_TOO_LARGE", "UNSUPPORTED_MEDIA_TYPE")
_WEBHOOK = (
    "VALIDATION_ERROR",
    "UNAUTHORIZED",
    "WEBHOOK_NOT_FOUND",
    "RATE_LIMITED",
    "SERVICE_UNAVAILABLE",
)
_IDEMPOTENT = ("IDEMPOTENCY_IN_PROGRESS", "IDEMPOTENCY_KEY_REUSED")
OPERATION_ERRORS: dict[str, tuple[str, ...]] = {
    "createLead": (*_BODY, *_IDEMPOTENT, *_ALWAYS),
    "createLeadsBatch": (*_BODY, *_IDEMPOTENT, *_ALWAYS),
    "listLeads": ("VALIDATION_ERROR", *_ALWAYS),
    "exportLeads": ("VALIDATION_ERROR", *_ALWAYS),
    "getLead": ("VALIDATION_ERROR", "LEAD_NOT_FOUND", *_ALWAYS),
    "updateLead": (*_BODY, "LEAD_NOT_FOUND", "PRECONDITION_FAILED", *_IDEMPOTENT, *_ALWAYS),
    "deleteLead": (
        "VALIDATION_ERROR",
        "CONFIRMATION_REQUIRED",
        "LEAD_NOT_FOUND",
        "PRECONDITION_FAILED",
        *_IDEMPOTENT,
        *_ALWAYS,
    ),
    "listEvents": ("VALIDATION_ERROR", *_ALWAYS),
    # Workspace-wide: no chatbot in the path.
    "createWebhook": (*_BODY, "UNAUTHORIZED", "RATE_LIMITED", "SERVICE_UNAVAILABLE"),
    "listWebhooks": ("VALIDATION_ERROR", "UNAUTHORIZED", "RATE_LIMITED", "SERVICE_UNAVAILABLE"),
    "getWebhook": _WEBHOOK,
    "updateWebhook": (*_BODY, *_WEBHOOK[1:]),
    "deleteWebhook": ("CONFIRMATION_REQUIRED", *_WEBHOOK),
    "rotateWebhookSecret": _WEBHOOK,
    "listWebhookDeliveries": _WEBHOOK,
    "replayWebhook": (*_BODY, *_WEBHOOK[1:]),
}
# A delete's confirmation (or instead the header X-Confirm-Delete: true).
CONFIRM_PARAMETER: dict[str, Any] = {
    "in": "query",
    "name": "confirm",
    "required": True,
    "schema": {"type": "string", "enum": ["true"]},
    "description": "Must be `true`. Alternative: the header `X-Confirm-Delete: true`.",
    "example": "true",
}
_IDEMPOTENCY_KEY = {
    "in": "header",
    "name": "Idempotency-Key",
    "required": False,
    "description": "1-255 printable ASCII characters, unique per intended change (a UUID). "
    "The first result is kept at least 24 hours and replayed, byte for byte with "
    "`Idempotent-Replayed: true`, to every retry with the same key, method, path and body; "
    "a different request with the key is a 422, a retry while the first still runs a 409. "
    "Keys are scoped to the API key.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
    "example": "8e03978e-40d5-43e8-bc93-6894a57f9324",
}
_IF_MATCH = {
    "in": "header",
    "name": "If-Match",
    "required": False,
    "description": "Change the lead only if its current ETag is one of these (or `*`); "
    "otherwise 412 and nothing changes. Checked atomically with the write.",
    "schema": {"type": "string"},
    "example": '"3f2c9a7e1b5d4c8e9f0a1b2c3d4e5f60"',
}
_IF_NONE_MATCH = {
    "in": "header",
    "name": "If-None-Match",
    "required": False,
    "description": "A 304 with no body when the lead's current ETag is one of these.",
    "schema": {"type": "string"},
    "example": '"3f2c9a7e1b5d4c8e9f0a1b2c3d4e5f60"',
}
OPERATION_HEADERS: dict[str, tuple[dict[str, Any], ...]] = {
    "createLead": (_IDEMPOTENCY_KEY,),
    "createLeadsBatch": (_IDEMPOTENCY_KEY,),
    "getLead": (_IF_NONE_MATCH,),
    "updateLead": (_IF_MATCH, _IDEMPOTENCY_KEY),
    "deleteLead": (_IF_MATCH, _IDEMPOTENCY_KEY),
}
# Operations answering with one lead, whose 2xx carries its ETag.
SINGLE_LEAD = frozenset({"createLead", "getLead", "updateLead"})

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
PATH_PARAMS = {
    "chatbotId": ("The chatbot's id", "^cb_[0-9a-f]{16}$", "cb_1234567890abcdef"),
    "leadId": ("The lead's id", "^lead_[0-9a-f]{16}$", "lead_1234567890abcdef"),
    "webhookId": ("The webhook endpoint's id", "^wh_[0-9a-f]{16}$", "wh_0123456789abcdef"),
}
_LEAD_FROM_RESPONSE = {
    "chatbotId": "$request.path.chatbotId",
    "leadId": "$response.body#/data/id",
}
_LINKS: dict[str, dict[str, str]] = {
    "getLead": {"operationId": "getLead", "description": "Read this lead"},
    "updateLead": {"operationId": "updateLead", "description": "Change this lead"},
    "deleteLead": {"operationId": "deleteLead", "description": "Delete this lead (confirmed)"},
    "getWebhook": {"operationId": "getWebhook", "description": "Read this endpoint"},
    "updateWebhook": {"operationId": "updateWebhook", "description": "Change this endpoint"},
    "deleteWebhook": {
        "operationId": "deleteWebhook",
        "description": "Delete this endpoint (confirmed)",
    },
    "rotateWebhookSecret": {
        "operationId": "rotateWebhookSecret",
        "description": "Rotate this endpoint's secret",
    },
    "listWebhookDeliveries": {
        "operationId": "listWebhookDeliveries",
        "description": "Read this endpoint's delivery log",
    },
    "replayWebhook": {"operationId": "replayWebhook", "description": "Replay events to it"},
}
_WEBHOOK_FROM_RESPONSE = {"webhookId": "$response.body#/data/id"}
_WEBHOOK_TARGETS = (
    "getWebhook",
    "updateWebhook",
    "deleteWebhook",
    "rotateWebhookSecret",
    "listWebhookDeliveries",
    "replayWebhook",
)
OPERATION_LINKS = {  # operationId: (success status, links to other operations)
    "createLead": ("201", ("getLead", "updateLead", "deleteLead")),
    "getLead": ("200", ("updateLead", "deleteLead")),
    "updateLead": ("200", ("getLead", "deleteLead")),
    "createWebhook": ("201", _WEBHOOK_TARGETS),
    "getWebhook": ("200", tuple(t for t in _WEBHOOK_TARGETS if t != "getWebhook")),
}
TAGS = [
    {
        "name": "leads",
        "description": "A chatbot's leads: create, list and search, read, update, delete. "
        "Every operation needs a workspace API key whose workspace owns the chatbot.",
    },
    {
        "name": "events",
        "description": "A chatbot's lead changes in order, kept 30 days: the feed a "
        "consumer catches up from, and the bodies of webhook deliveries.",
    },
    {
        "name": "webhooks",
        "description": "The workspace's webhook endpoints (managed with any key of the "
        "workspace): signed deliveries of every lead change, retried for 3 days, with a "
        "delivery log and replay.",
    },
]


def error_responses(*statuses: int) -> dict[int, dict[str, Any]]:
    """The ``responses`` of a ``@docs`` decorator for these error statuses."""
    return {
        status: {"description": ERROR_STATUS_DESCRIPTIONS[status], "schema": ErrorEnvelopeSchema}
        for status in statuses
    }


def error_example(code: str) -> dict[str, Any]:
    _, message, details = ERROR_EXAMPLES[code]
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    error["requestId"] = REQUEST_ID_EXAMPLE
    return {"success": False, "error": error}


def finish_spec(raw: dict[str, Any]) -> dict[str, Any]:
    """Make aiohttp-apispec's output valid OpenAPI 3.0 and complete it."""
    spec = copy.deepcopy(raw)
    for path_item in spec.get("paths", {}).values():
        for operation in path_item.values():
            _fix_operation(operation)
    components = spec.setdefault("components", {})
    schemas = components.get("schemas", {})
    for name in ("LeadCreate", "LeadUpdate"):
        schema = schemas.get(name)
        if schema:  # server-owned fields are refused, not accepted: they are not inputs
            schema["properties"] = {
                k: v for k, v in schema["properties"].items() if not v.get("writeOnly")
            }
            schema["additionalProperties"] = False
    for name in ("WebhookCreate", "WebhookUpdate", "Replay"):
        if name in schemas:  # unknown fields are a 400
            schemas[name]["additionalProperties"] = False
    for name in ("LeadUpdate", "WebhookUpdate"):
        if name in schemas:
            schemas[name]["minProperties"] = 1  # an empty update is a 400
    components["securitySchemes"] = {
        "bearerAuth": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "sk-workspace_<secret>",
            "description": "A workspace API key: `Authorization: Bearer sk-workspace_…`.",
        }
    }
    spec["security"] = [{"bearerAuth": []}]
    spec["servers"] = [{"url": "/"}]
    spec["tags"] = TAGS
    return spec


def _ref(ref: Any) -> str:
    if isinstance(ref, dict):
        ref = ref["$ref"]
    name = str(ref).rsplit("/", 1)[-1]
    return f"#/components/schemas/{name}"


def _fix_operation(operation: dict[str, Any]) -> None:
    params = []
    for param in operation.get("parameters", []):
        if param.get("in") == "body":
            schema = dict(param["schema"])
            example = schema.pop("example", None)
            if list(schema) == ["allOf"] and len(schema["allOf"]) == 1:
                schema = {"$ref": _ref(schema["allOf"][0])}  # apispec's wrapper for examples
            body: dict[str, Any] = {"schema": schema}
            if example is not None:
                body["example"] = example
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": body},
            }
            continue
        if param.get("in") == "path":
            description, pattern, example = PATH_PARAMS.get(param["name"], ("", None, None))
            param = {
                "in": "path",
                "name": param["name"],
                "required": True,
                "description": description,
                "schema": {"type": "string", **({"pattern": pattern} if pattern else {})},
            }
            if example:
                param["example"] = example
        params.append(param)
    operation["parameters"] = params + list(
        OPERATION_HEADERS.get(operation.get("operationId", ""), ())
    )
    for oas2_only in ("produces", "consumes"):
        operation.pop(oas2_only, None)
    operation_id = operation.get("operationId", "")
    for status, response in operation.get("responses", {}).items():
        code = int(status)
        response["headers"] = {**_response_headers(code), **response.get("headers", {})}
        if operation_id in SINGLE_LEAD and code in (200, 201, 304):
            response["headers"].update(ETAG)
        if any(p["name"] == "Idempotency-Key" for p in OPERATION_HEADERS.get(operation_id, ())):
            response["headers"].update(REPLAYED)
        media = response.get("content", {}).get("application/json")
        if media is None:
            continue
        if code >= 400:
            codes = [
                c for c in OPERATION_ERRORS.get(operation_id, ()) if ERROR_EXAMPLES[c][0] == code
            ]
            media["examples"] = {c: {"value": error_example(c)} for c in codes}
    success, targets = OPERATION_LINKS.get(operation_id, (None, ()))
    if success in operation.get("responses", {}):
        operation["responses"][success]["links"] = {
            target: {
                **_LINKS[target],
                "parameters": {
                    **(_WEBHOOK_FROM_RESPONSE if "Webhook" in target else _LEAD_FROM_RESPONSE),
                    **({"confirm": "true"} if target.startswith("delete") else {}),
                },
            }
            for target in targets
        }


def _response_headers(code: int) -> dict[str, Any]:
    headers: dict[str, Any] = dict(REQUEST_ID_HEADER)
    if code == 401:
        headers.update(WWW_AUTHENTICATE)
    else:
        headers.update(RATE_LIMIT_HEADERS)
    if code in (429, 503):
        headers.update(RETRY_AFTER)
    if code == 201:
        headers.update(LOCATION)
    return headers


def _restore_decorator_data(app: web.Application) -> None:
    """Give each handler the ``__apispec__`` its decorators wrote, as they wrote it.

    aiohttp-apispec consumes that data while documenting a route (it pops the request
    schemas and appends to the parameters), and it lives on the handler functions, which
    every app shares: a second app (the tests build several) would get a document
    without request bodies. The first call keeps a copy; every call works on a fresh one.
    """
    for route in app.router.routes():
        handler: Any = route.handler
        data = getattr(handler, "__apispec__", None)
        if data is None:
            continue
        pristine = handler.__dict__.setdefault("_pollybot_apispec", _copy_containers(data))
        handler.__apispec__ = _copy_containers(pristine)


def _copy_containers(value: Any) -> Any:
    """Fresh dicts and lists all the way down; other objects (schemas) are shared."""
    if isinstance(value, dict):
        return {k: _copy_containers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_containers(v) for v in value]
    return value


def build_spec(app: web.Application) -> dict[str, Any]:
    """Document the routes added so far (call it after the last one)."""
    _restore_decorator_data(app)
    with warnings.catch_warnings():
        # aiohttp-apispec stores its state under plain string keys, not web.AppKey.
        warnings.simplefilter("ignore", NotAppKeyWarning)
        setup_aiohttp_apispec(
            app,
            title="PollyBot Leads API",
            version=__version__,
            openapi_version="3.0.2",
            url=None,  # served below, from frozen bytes; apispec's own page is not used
            in_place=True,  # document the routes added so far, now, while not frozen
            info={
                "description": "Create, list, search, update and delete a chatbot's leads. "
                "Every response is the envelope `{success, data}` or `{success: false, "
                "error: {code, message, details?, requestId}}` and carries X-Request-Id.",
                "license": {
                    "name": "Apache-2.0",
                    "url": "https://www.apache.org/licenses/LICENSE-2.0",
                },
            },
        )
        finished = finish_spec(app[SPEC_APP_KEY])
        app[SPEC_APP_KEY] = finished
    return finished


def add_spec_route(app: web.Application) -> None:
    """Serve the finished document at SPEC_URL: built once, then only bytes are served."""
    body = json.dumps(build_spec(app), separators=(",", ":")).encode()

    async def openapi_json(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app.router.add_get(SPEC_URL, openapi_json, name="openapi")
