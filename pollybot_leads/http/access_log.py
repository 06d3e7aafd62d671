"""One access line and the request metrics per request; the request id for every log line.

Second outermost (after the request id is known, before errors are mapped), so it sees
each request's final status, including the error envelope's. While it runs the request
id is in :data:`~pollybot_leads.telemetry.logs.request_id_var`, so every line logged while the
request is handled, by any module, carries it.

The line holds the method, the route template (never the raw path: no ids, no query),
the status, the duration in ms, the request id and the API key id once authenticated;
never a header value, a body or anything personal. Probes of the operations endpoints
(/healthz, /readyz, /metrics) are logged at DEBUG when they succeed.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from ..telemetry import metrics
from ..telemetry.logs import request_id_var
from .context import AUTH, REQUEST_ID

access_log = logging.getLogger("pollybot_leads.access")
QUIET_ROUTES = frozenset(("/healthz", "/readyz", "/metrics"))
CLIENT_GONE = 499  # the client closed the connection before its response (nginx's code)


def route_template(request: web.Request) -> str:
    """The matched resource's canonical path, or ``unmatched`` (404, 405)."""
    info = request.match_info
    resource = info.route.resource
    if resource is None or info.http_exception is not None:
        return metrics.UNMATCHED_ROUTE
    return resource.canonical


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request.get(REQUEST_ID, "")
    token = request_id_var.set(request_id or None)
    started = time.perf_counter()
    status = 500
    metrics.IN_FLIGHT.inc()
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # a redirect: the error middleware maps every error
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = CLIENT_GONE
        raise
    finally:
        metrics.IN_FLIGHT.dec()
        elapsed = time.perf_counter() - started
        route, method = route_template(request), metrics.method_label(request.method)
        metrics.count_request(route, method, status, elapsed)
        level = logging.DEBUG if route in QUIET_ROUTES and status < 400 else logging.INFO
        if access_log.isEnabledFor(level):
            auth = request.get(AUTH)
            key_id = auth.key.id if auth is not None else None
            duration_ms = round(elapsed * 1000, 2)
            access_log.log(
                level,
                "%s %s %d %.2fms key=%s",
                method,
                route,
                status,
                duration_ms,
                key_id or "-",
                extra={
                    "access": {
                        "method": method,
                        "route": route,
                        "status": status,
                        "durationMs": duration_ms,
                        "keyId": key_id,
                    }
                },
            )
        request_id_var.reset(token)
