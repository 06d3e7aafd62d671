"""Every request gets one store budget: no request can hold the store, or wait on it,
for longer than ``mongodb.timeout_ms``, and every client has its answer soon after."""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ..storage.client import store_deadline, unavailable

# The driver checks some waits (server selection) only every half second, so a request
# can overrun its store budget by that much. Past the budget and this slack the client
# gets its 503 at once. The handler is not cancelled (cancelling the driver mid-call can
# leave its connection pool unable to recover): it finishes in the background within
# the driver's own deadline, and its result is dropped.
HARD_CAP_SLACK_SECONDS = 0.25
_OVERRUNS: set[asyncio.Task[web.StreamResponse]] = set()


def _forget(task: asyncio.Task[web.StreamResponse]) -> None:
    _OVERRUNS.discard(task)
    if not task.cancelled():
        with contextlib.suppress(Exception):
            task.exception()  # retrieved: an overrun's failure is already a 503


def deadline_middleware_factory(seconds: float) -> Middleware:
    @web.middleware
    async def deadline_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        with store_deadline(seconds):
            task = asyncio.ensure_future(handler(request))  # inherits the deadline
        done, _ = await asyncio.wait({task}, timeout=seconds + HARD_CAP_SLACK_SECONDS)
        if done:
            return task.result()
        _OVERRUNS.add(task)
        task.add_done_callback(_forget)
        raise unavailable()

    return deadline_middleware
