"""The outermost layer, in one pass: the request id, the in-flight count, the error
envelope, then the metrics and the access line with the request's final status.

While a request runs, its id is in :data:`~pollybot_leads.telemetry.logs.request_id_var`,
so every line logged while it is handled, by any module, carries it.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ..telemetry import metrics
from ..telemetry.logs import request_id_var
from .access_log import log_access
from .activity import RequestActivity
from .errors import response_for
from .request_id import assign_request_id

CLIENT_GONE = 499  # the client closed the connection before its response (nginx's code)


def front_middleware_factory(activity: RequestActivity | None) -> Middleware:
    """``activity``: what the in-process webhook delivery and deletion jobs watch (None:
    not counted)."""

    @web.middleware
    async def front_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        token = request_id_var.set(assign_request_id(request))
        if activity is not None:
            activity.enter()
        metrics.IN_FLIGHT.inc()
        started = time.perf_counter()
        status = 500
        try:
            try:
                response = await handler(request)
            except ConnectionResetError:  # the client left mid-request (its body unread)
                response = web.Response(status=CLIENT_GONE)  # nobody reads it: not a 500
            except Exception as exc:  # the envelope (a redirect is raised again)
                response = response_for(request, exc)
            status = response.status
            return response
        except web.HTTPException as exc:  # a redirect
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = CLIENT_GONE
            raise
        finally:
            metrics.IN_FLIGHT.dec()
            log_access(request, status, time.perf_counter() - started)
            request_id_var.reset(token)
            if activity is not None:
                activity.leave()

    return front_middleware
