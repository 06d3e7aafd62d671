"""One access line and the request metrics per request (written by http/front.py, with
each request's final status, the error envelope's included).

The line holds the method, the route template (never the raw path: no ids, no query),
the status, the duration in ms, the request id and the API (or admin) key id once
authenticated;
never a header value, a body or anything personal. Probes of the operations endpoints
(/healthz, /readyz, /metrics) are logged at DEBUG when they succeed. With the JSON log
alone on the way, an INFO line is written without a log record (telemetry/logs.py).
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from ..telemetry import metrics
from ..telemetry.logs import NO_REQUEST, access_json_line, access_line_handler, request_id_var
from .context import ADMIN_KEY, API_KEY

access_log = logging.getLogger("pollybot_leads.access")
# The line's text (the JSON format adds the fields at top level beside it).
LINE = "%s %s %d %.2fms key=%s"
QUIET_ROUTES = frozenset(("/healthz", "/readyz", "/metrics"))


def route_template(request: web.Request) -> str:
    """The matched resource's canonical path, or ``unmatched`` (404, 405)."""
    info = request.match_info
    resource = info.route.resource
    if resource is None or info.http_exception is not None:
        return metrics.UNMATCHED_ROUTE
    return resource.canonical


def log_access(request: web.Request, status: int, elapsed: float) -> None:
    """The request's metrics and its access line."""
    route, method = route_template(request), metrics.method_label(request.method)
    metrics.count_request(route, method, status, elapsed)
    level = logging.DEBUG if route in QUIET_ROUTES and status < 400 else logging.INFO
    if access_log.isEnabledFor(level):
        key = request.get(API_KEY) or request.get(ADMIN_KEY)  # an admin key: adk_…
        key_id = key.id if key is not None else None
        duration_ms = round(elapsed * 1000, 2)
        access = {
            "method": method,
            "route": route,
            "status": status,
            "durationMs": duration_ms,
            "keyId": key_id,
        }
        args = (method, route, status, duration_ms, key_id or "-")
        if level == logging.INFO and (handler := access_line_handler(access_log)) is not None:
            message = LINE % args
            request_id = request_id_var.get() or NO_REQUEST
            handler.write_line(
                access_json_line(time.time(), access_log.name, message, request_id, access)
            )
            return
        access_log.log(level, LINE, *args, extra={"access": access})
