"""X-Request-Id on every response: the client's own when sane, else a new one."""

from __future__ import annotations

import os
import re

from aiohttp import web

from .context import REQUEST_ID, RESPONSE_HEADERS
from .security_headers import stamp_security_headers

_SANE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}\Z")
# New ids are cut from random bytes read a few kilobytes at a time (one system call for
# 256 ids instead of one each); a forked process starts on bytes of its own.
_ID_BYTES = 16
_POOL_BYTES = _ID_BYTES * 256
_pool = b""
_used = 0


def _forget_pool() -> None:
    global _pool, _used
    _pool, _used = b"", 0


os.register_at_fork(after_in_child=_forget_pool)


def new_request_id() -> str:
    """32 hex digits of fresh random bytes (os.urandom's)."""
    global _pool, _used
    if _used >= len(_pool):
        _pool, _used = os.urandom(_POOL_BYTES), 0
    start, _used = _used, _used + _ID_BYTES
    return _pool[start:_used].hex()


def assign_request_id(request: web.Request) -> str:
    given = request.headers.get("X-Request-Id", "")
    request_id = request[REQUEST_ID] = given if _SANE.match(given) else new_request_id()
    request[RESPONSE_HEADERS] = {}
    return request_id


def stamp_request_headers(request: web.Request, response: web.StreamResponse) -> None:
    request_id = request.get(REQUEST_ID)
    if request_id is None:  # a request that never reached the middleware
        request_id = request[REQUEST_ID] = new_request_id()
    response.headers["X-Request-Id"] = request_id
    for name, value in request.get(RESPONSE_HEADERS, {}).items():
        response.headers.setdefault(name, value)


async def add_response_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: stamp every response, errors and aiohttp's own included: its
    request id and the headers the middlewares left (rate limit), then the fixed ones
    (security_headers.py). One callback: each costs a coroutine on every response."""
    stamp_request_headers(request, response)
    stamp_security_headers(request, response)
