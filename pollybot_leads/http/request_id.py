"""X-Request-Id on every response: the client's own when sane, else a new one."""

from __future__ import annotations

import os
import re

from aiohttp import web

from .context import REQUEST_ID, RESPONSE_HEADERS

_SANE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}\Z")


def assign_request_id(request: web.Request) -> str:
    given = request.headers.get("X-Request-Id", "")
    request_id = request[REQUEST_ID] = given if _SANE.match(given) else os.urandom(16).hex()
    request[RESPONSE_HEADERS] = {}
    return request_id


async def add_request_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: stamp every response, errors and aiohttp's own included."""
    request_id = request.get(REQUEST_ID)
    if request_id is None:  # a request that never reached the middleware
        request_id = request[REQUEST_ID] = os.urandom(16).hex()
    response.headers["X-Request-Id"] = request_id
    for name, value in request.get(RESPONSE_HEADERS, {}).items():
        response.headers.setdefault(name, value)
