"""One mapping from every failure to the JSON error envelope."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

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


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request.get(REQUEST_ID, "")
    try:
        return await handler(request)
    except AppError as error:
        if error.status >= 500:
            log.warning("%s %s -> %s %s", request.method, request.path, error.status, error.code)
        return error_response(error, request_id)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(_from_http(exc), request_id)
    except Exception:
        log.exception("unhandled error on %s %s [%s]", request.method, request.path, request_id)
        return error_response(AppError(), request_id)
