"""Checks that always run one after another before a handler, as one middleware layer.

Finding the key, taking its token and checking its chatbot each only look at the
request, set what they found on it or raise: as middlewares of their own they cost a
layer each on every request (a call, a coroutine, and a frame more on every resumption
of the handler's task). A :data:`Step` is such a check; :func:`steps_middleware` runs
them in order, then the handler.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

Step = Callable[[web.Request], Awaitable[None]]


def steps_middleware(*steps: Step) -> Middleware:
    @web.middleware
    async def steps_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        for step in steps:
            await step(request)
        return await handler(request)

    return steps_middleware
