"""Every request gets one store budget: no request can hold the store, or wait on it,
for longer than ``mongodb.timeout_ms``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from ..storage.client import store_deadline

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def deadline_middleware_factory(seconds: float) -> Callable[[web.Request, Handler], Awaitable]:
    @web.middleware
    async def deadline_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        with store_deadline(seconds):
            return await handler(request)

    return deadline_middleware
