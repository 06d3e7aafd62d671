"""One mapping from every failure to the JSON error envelope."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from ..errors import (
    AppError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from .context import REQUEST_ID

log = logging.getLogger("pollybot_leads.errors")

_HTTP_ERRORS: dict[int, type[AppError]] = {
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
}


def error_body(error: AppError, request_id: str) -> dict[str, Any]:
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.details:
        body["details"] = error.details
    body["requestId"] = request_id
    return {"success": False, "error": body}


def error_response(error: AppError, request_id: str) -> web.Response:
    response = web.json_response(error_body(error, request_id), status=error.status)
    response.headers.update(error.headers)
    return response


def _from_http(exc: web.HTTPException) -> AppError:
    kind = _HTTP_ERRORS.get(exc.status)
    if kind is not None:
        error = kind()
    else:
        error = AppError(exc.reason)
        error.status, error.code = exc.status, exc.reason.upper().replace(" ", "_")
    if exc.status == 405 and "Allow" in exc.headers:
        error.headers["Allow"] = exc.headers["Allow"]
    return error


def response_for(request: web.Request, exc: Exception) -> web.Response:
    """The error envelope for whatever a handler raised (a redirect is raised again)."""
    request_id = request.get(REQUEST_ID, "")
    if isinstance(exc, AppError):
        if exc.status >= 500:
            log.warning("%s %s -> %s %s", request.method, request.path, exc.status, exc.code)
        return error_response(exc, request_id)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        return error_response(_from_http(exc), request_id)
    log.exception("unhandled error on %s %s [%s]", request.method, request.path, request_id)
    return error_response(AppError(), request_id)
