"""OpenAPI 3 document and Swagger UI (served offline from the package's own assets).

aiohttp-apispec builds the document from the handlers' decorators; its OpenAPI 3 output
still describes request bodies as ``in: body`` parameters and path parameters with a
bare ``type``, both invalid in OpenAPI 3. ``finish_spec`` rewrites them and adds what the
decorators cannot say: the bearer scheme, error examples and response headers.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

from aiohttp import web
from aiohttp.web_exceptions import NotAppKeyWarning
from aiohttp_apispec import setup_aiohttp_apispec

from .. import __version__
from .schemas import ErrorEnvelopeSchema

SPEC_URL = "/api/docs/openapi.json"
DOCS_URL = "/api/docs"
STATIC_URL = "/api/docs/static"
SPEC_APP_KEY = "swagger_dict"  # where aiohttp-apispec keeps the document

_ERRORS: dict[int, tuple[str, str, str, dict | None]] = {
    400: (
        "Invalid data, invalid JSON or missing confirmation",
        "VALIDATION_ERROR",
        "Invalid data",
        {"email": ["Not a valid email address."]},
    ),
    401: (
        "Missing, malformed, unknown or revoked API key",
        "UNAUTHORIZED",
        "Invalid or missing API key",
        None,
    ),
    404: ("Chatbot or lead not found", "LEAD_NOT_FOUND", "Lead not found", None),
    413: (
        "Request body over the size limit",
        "PAYLOAD_TOO_LARGE",
        "Request body is too large",
        None,
    ),
    415: (
        "Request body is not application/json",
        "UNSUPPORTED_MEDIA_TYPE",
        "Content-Type must be application/json",
        None,
    ),
    429: ("Rate limit exceeded (see Retry-After)", "RATE_LIMITED", "Too many requests", None),
    503: (
        "A backing store is unavailable (see Retry-After)",
        "SERVICE_UNAVAILABLE",
        "A backing store is unavailable",
        None,
    ),
}

_INT_HEADER = {"schema": {"type": "integer"}}
RATE_LIMIT_HEADERS = {
    "X-RateLimit-Limit": {"description": "Bucket capacity", **_INT_HEADER},
    "X-RateLimit-Remaining": {"description": "Whole tokens left", **_INT_HEADER},
    "X-RateLimit-Reset": {"description": "Seconds until the bucket is full", **_INT_HEADER},
    "X-Request-Id": {"description": "The request's id", "schema": {"type": "string"}},
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait", **_INT_HEADER}}
PATH_PARAMS = {
    "chatbotId": ("The chatbot's id", "^cb_[0-9a-f]{16}$", "cb_1234567890abcdef"),
    "leadId": ("The lead's id", "^lead_[0-9a-f]{16}$", "lead_1234567890abcdef"),
}


def error_responses(*statuses: int) -> dict[int, dict[str, Any]]:
    return {
        status: {"description": _ERRORS[status][0], "schema": ErrorEnvelopeSchema}
        for status in statuses
    }


def _error_example(status: int) -> dict[str, Any]:
    _, code, message, details = _ERRORS[status]
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    error["requestId"] = "3f2c9a7e1b5d4c8e9f0a1b2c3d4e5f60"
    return {"success": False, "error": error}


def finish_spec(raw: dict[str, Any]) -> dict[str, Any]:
    """Make aiohttp-apispec's output valid OpenAPI 3.0 and complete it."""
    spec = copy.deepcopy(raw)
    for path_item in spec.get("paths", {}).values():
        for operation in path_item.values():
            _fix_operation(operation)
    components = spec.setdefault("components", {})
    for name in ("LeadCreate", "LeadUpdate"):
        schema = components.get("schemas", {}).get(name)
        if schema:  # server-owned fields are refused, not accepted: they are not inputs
            schema["properties"] = {
                k: v for k, v in schema["properties"].items() if not v.get("writeOnly")
            }
            schema["additionalProperties"] = False
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
    operation["parameters"] = params
    for oas2_only in ("produces", "consumes"):
        operation.pop(oas2_only, None)
    for status, response in operation.get("responses", {}).items():
        code = int(status)
        headers = (
            dict(RATE_LIMIT_HEADERS)
            if code != 401
            else {"X-Request-Id": RATE_LIMIT_HEADERS["X-Request-Id"]}
        )
        if code in (429, 503):
            headers.update(RETRY_AFTER)
        if code == 201:
            headers["Location"] = {
                "description": "The new lead's URL",
                "schema": {"type": "string"},
            }
        response["headers"] = headers
        if code >= 400 and "content" in response:
            response["content"]["application/json"]["example"] = _error_example(code)


def setup_docs(app: web.Application) -> None:
    with warnings.catch_warnings():
        # aiohttp-apispec stores its state under plain string keys, not web.AppKey.
        warnings.simplefilter("ignore", NotAppKeyWarning)
        _register_apispec(app)
    document = app[SPEC_APP_KEY]  # served by apispec's own handler: rewrite it in place
    finished = finish_spec(document)
    document.clear()
    document.update(finished)


def _register_apispec(app: web.Application) -> None:
    setup_aiohttp_apispec(
        app,
        title="PollyBot Leads API",
        version=__version__,
        openapi_version="3.0.2",
        url=SPEC_URL,
        swagger_path=DOCS_URL,
        static_path=STATIC_URL,
        in_place=True,  # document the routes added so far, now, while the app is not frozen
        info={"description": "Create, list, search, update and delete a chatbot's leads."},
    )
