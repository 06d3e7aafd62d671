"""The OpenAPI 3 document, built once at start-up from what each handler declares
(``spec.py``) and served as bytes. apispec's MarshmallowPlugin turns the marshmallow
schemas into components. The builder refuses a document with a fact missing: an API
route without a declaration, a path parameter, tag or link target it does not know."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from .. import __version__
from ..errors import AppError
from .context import ADMIN_PREFIX, ADMIN_SCOPE, PROTECTED_PREFIX
from .fields import ServerOwned
from .responses import ErrorEnvelopeSchema
from .spec import (
    ADMIN_AUTH,
    BEARER_AUTH,
    ERROR_STATUS_DESCRIPTIONS,
    EXAMPLE_OVERRIDES,
    IDEMPOTENCY_KEY,
    INFO,
    PATH_PARAMETERS,
    RATE_LIMIT_HEADERS,
    REPLAYED,
    REQUEST_ID_EXAMPLE,
    REQUEST_ID_HEADER,
    RETRY_AFTER,
    SPEC_URL,
    TAGS,
    WWW_AUTHENTICATE,
    Body,
    Link,
    Operation,
    Response,
    declared_operation,
)

spec_key = web.AppKey("openapi_spec", dict)  # the document as built (scripts read it)


def error_example(error: type[AppError]) -> dict[str, Any]:
    body = {"code": error.code, "message": error.message, **EXAMPLE_OVERRIDES.get(error, {})}
    return {"success": False, "error": {**body, "requestId": REQUEST_ID_EXAMPLE}}


def _common_headers(status: int) -> dict[str, Any]:
    """The headers the middlewares put on every response with this status."""
    headers: dict[str, Any] = dict(REQUEST_ID_HEADER)
    headers.update(WWW_AUTHENTICATE if status == 401 else RATE_LIMIT_HEADERS)
    if status in (429, 503):
        headers.update(RETRY_AFTER)
    return headers


def _path_parameter(name: str) -> dict[str, Any]:
    if name not in PATH_PARAMETERS:
        raise LookupError(f"path parameter {name!r} is not described in PATH_PARAMETERS")
    description, pattern, example = PATH_PARAMETERS[name]
    return {
        "in": "path",
        "name": name,
        "required": True,
        "description": description,
        "schema": {"type": "string", "pattern": pattern},
        "example": example,
    }


def _error_response(errors: list[type[AppError]], description: str) -> dict[str, Any]:
    examples = {error.code: {"value": error_example(error)} for error in errors}
    media = {"schema": ErrorEnvelopeSchema, "examples": examples}
    return {"content": {"application/json": media}, "description": description}


def _declared_response(declared: Response) -> dict[str, Any]:
    response: dict[str, Any] = {}
    if declared.schema is not None:
        response["content"] = {"application/json": {"schema": declared.schema}}
    elif declared.content is not None:
        response["content"] = dict(declared.content)
    response["description"] = declared.description
    return response


def _links(links: tuple[Link, ...]) -> dict[str, Any]:
    return {
        link.operation_id: {
            "operationId": link.operation_id,
            "description": link.description,
            "parameters": dict(link.parameters),
        }
        for link in links
    }


def _responses(op: Operation, on_every_response: Mapping[str, Any]) -> dict[str, Any]:
    errors: dict[int, list[type[AppError]]] = {}
    for error in op.errors:
        errors.setdefault(error.status, []).append(error)
    if overlap := set(errors) & set(op.responses):
        raise ValueError(f"{op.operation_id}: {overlap} declared as success and error")
    if stray := set(op.error_descriptions) - set(errors):
        raise ValueError(f"{op.operation_id}: error_descriptions for no error: {stray}")
    responses: dict[str, Any] = {}
    for status in sorted({*op.responses, *errors}):
        declared = op.responses.get(status)
        if declared is None:
            description = op.error_descriptions.get(status, ERROR_STATUS_DESCRIPTIONS[status])
            response = _error_response(errors[status], description)
        else:
            response = _declared_response(declared)
        own_headers = declared.headers if declared is not None else {}
        response["headers"] = {**_common_headers(status), **own_headers, **on_every_response}
        if declared is not None and declared.links:
            response["links"] = _links(declared.links)
        responses[str(status)] = response
    return responses


def _operation(op: Operation, path: str) -> dict[str, Any]:
    """The operation object, marshmallow schemas still in it (apispec resolves them)."""
    declared = [dict(p) for p in op.parameters]
    parameters = [p for p in declared if p["in"] == "query"]
    if op.query is not None:
        parameters.append({"in": "query", "schema": op.query})
    parameters += [_path_parameter(name) for name in re.findall(r"{(\w+)}", path)]
    parameters += [p for p in declared if p["in"] == "header"]
    # The idempotency middleware marks a replayed result, whatever its status.
    idempotent = any(p["name"] == IDEMPOTENCY_KEY["name"] for p in declared)
    if op.scope == ADMIN_SCOPE:
        needs = "Needs an admin key (`sk-admin_…`); a workspace key is a 401."
    else:
        needs = f"Needs a key with the scope `{op.scope}`" + (
            "." if "{chatbotId}" in path else " and not limited to chatbots."
        )
    operation: dict[str, Any] = {
        "tags": [op.tag],
        "summary": op.summary,
        "description": f"{op.description}\n\n{needs}",
        "operationId": op.operation_id,
        "parameters": parameters,
        "x-required-scopes": [op.scope],
    }
    if op.scope == ADMIN_SCOPE:
        operation["security"] = [{"adminAuth": []}]
    if op.body is not None:
        media = {"schema": op.body.schema, "example": op.body.example}
        operation["requestBody"] = {"required": True, "content": {"application/json": media}}
    operation["responses"] = _responses(op, REPLAYED if idempotent else {})
    return operation


def _finish_body(document: dict[str, Any], operation: dict[str, Any], body: Body) -> None:
    """What a body's component schema says beyond its marshmallow schema."""
    ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = document["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    # Server-owned fields are refused when sent (a 400 naming them): not inputs.
    owned = {
        f.data_key or name for name, f in body.schema().fields.items() if isinstance(f, ServerOwned)
    }
    schema["properties"] = {k: v for k, v in schema["properties"].items() if k not in owned}
    if body.min_properties is not None:
        schema["minProperties"] = body.min_properties
    if body.one_of:
        schema["oneOf"] = [{"required": [name]} for name in body.one_of]


def _check_links(operations: Mapping[str, dict[str, Any]]) -> None:
    """Every link names an operation of the document, and parameters it has."""
    for source, operation in operations.items():
        for response in operation["responses"].values():
            for link in response.get("links", {}).values():
                target = operations.get(link["operationId"])
                if target is None:
                    raise LookupError(f"{source} links to unknown {link['operationId']}")
                names = {p["name"] for p in target["parameters"]}
                if unknown := set(link["parameters"]) - names:
                    raise LookupError(f"{source} links to {target['operationId']} with {unknown}")


def _nullable_nested(document: dict[str, Any]) -> None:
    """apispec writes a nullable nested schema as ``anyOf: [{$ref}, {type: object,
    nullable: true}]``, whose second branch takes any object (``{}`` included): say
    "this schema, or null" instead."""
    for component in document["components"]["schemas"].values():
        for name, prop in component.get("properties", {}).items():
            branches = prop.get("anyOf")
            if (
                branches
                and len(branches) == 2
                and branches[1] == {"type": "object", "nullable": True}
            ):
                rest = {k: v for k, v in prop.items() if k != "anyOf"}
                component["properties"][name] = {**rest, "allOf": [branches[0]], "nullable": True}


def build_spec(app: web.Application) -> dict[str, Any]:
    """Document the routes added so far (call it after the last API route)."""
    spec = APISpec(
        title="PollyBot Leads API",
        version=__version__,
        openapi_version="3.0.2",
        plugins=[MarshmallowPlugin()],
        info=copy.deepcopy(INFO),  # apispec adds the title and version to it
        servers=[{"url": "/"}],
        security=[{"bearerAuth": []}],
    )
    spec.components.security_scheme("bearerAuth", BEARER_AUTH)
    spec.components.security_scheme("adminAuth", ADMIN_AUTH)
    for tag in TAGS:
        spec.tag(tag)
    tag_names = {tag["name"] for tag in TAGS}
    declared: list[tuple[str, str, Operation]] = []
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        op = declared_operation(route.handler)
        if op is None:
            # Every route a key protects is the API's (a "*" route only answers 405).
            if path.startswith(PROTECTED_PREFIX) and route.method != "*":
                raise LookupError(f"{route.method} {path} has no @Operation declaration")
            continue
        if op.tag not in tag_names:
            raise LookupError(f"{op.operation_id}: tag {op.tag!r} is not in TAGS")
        if (op.scope == ADMIN_SCOPE) != path.startswith(ADMIN_PREFIX):
            raise ValueError(f"{op.operation_id}: admin routes, and only they, need an admin key")
        method = route.method.lower()
        spec.path(path=path, operations={method: _operation(op, path)})
        declared.append((path, method, op))
    document = spec.to_dict()
    _nullable_nested(document)
    operations: dict[str, dict[str, Any]] = {}
    for path, method, op in declared:
        operation = document["paths"][path][method]
        if op.operation_id in operations:
            raise ValueError(f"{method.upper()} {path}: operationId {op.operation_id} is taken")
        operations[op.operation_id] = operation
        if op.body is not None:
            _finish_body(document, operation, op.body)
    _check_links(operations)
    return copy.deepcopy(document)  # shares nothing with this module's constants


def add_spec_route(app: web.Application) -> None:
    """Serve the document at SPEC_URL: built once, then only bytes are served."""
    document = build_spec(app)
    app[spec_key] = document
    body = json.dumps(document, separators=(",", ":")).encode()

    async def openapi_json(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app.router.add_get(SPEC_URL, openapi_json, name="openapi")
