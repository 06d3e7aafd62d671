"""GET /healthz, /readyz and /metrics: no key, no rate-limit tokens, not in the API document.

* ``/healthz``: the process serves. No I/O.
* ``/readyz``: MongoDB answers a ping and Redis (when configured) a PING within 1 s;
  otherwise a 503 in the error envelope whose ``details`` name each dependency's state.
  Also a 503 once the server is draining (SIGTERM), so a load balancer stops sending.
* ``/metrics``: the Prometheus text format (:mod:`pollybot_leads.telemetry.metrics`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from .. import appkeys
from ..errors import ServiceUnavailable
from ..ratelimit.base import RateLimiter
from ..store.client import Mongo, store_deadline
from ..telemetry import metrics
from .state import OpsState, ops_state_key

log = logging.getLogger(__name__)

READINESS_TIMEOUT_SECONDS = 1.0
# The driver checks some waits only every half second (see http/deadline.py): past
# the budget and this slack the check counts as failed and is left to end by itself.
READINESS_SLACK_SECONDS = 0.25
NO_STORE = {"Cache-Control": "no-store"}
OK, UNAVAILABLE, NOT_CONFIGURED = "ok", "unavailable", "not configured"

_PINGS: set[asyncio.Task[None]] = set()  # pings past their time, still running


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"}, headers=NO_STORE)


async def mongo_ready(mongo: Mongo, timeout: float = READINESS_TIMEOUT_SECONDS) -> str:
    """``ok`` when the store answers a ping within ``timeout`` seconds."""
    with store_deadline(timeout):  # the driver's own deadline; the task inherits it
        task = asyncio.ensure_future(mongo.ping())
    # Not cancelled when late (cancelling the driver mid-call can break its pool).
    done, _ = await asyncio.wait({task}, timeout=timeout + READINESS_SLACK_SECONDS)
    if not done:
        _PINGS.add(task)
        task.add_done_callback(_forget)
        log.warning("readiness: mongodb did not answer a ping within %g s", timeout)
        return UNAVAILABLE
    error = task.exception()
    if error is not None:  # refused, TLS or authentication failed, no server selected...
        log.warning("readiness: mongodb ping failed: %r", error)
        return UNAVAILABLE
    return OK


def _forget(task: asyncio.Task[None]) -> None:
    _PINGS.discard(task)
    if not task.cancelled():
        with contextlib.suppress(Exception):
            task.exception()


async def limiter_ready(
    limiter: RateLimiter | None, timeout: float = READINESS_TIMEOUT_SECONDS
) -> str:
    if limiter is None:
        return NOT_CONFIGURED
    return OK if await limiter.ping(timeout) else UNAVAILABLE


async def readyz(request: web.Request) -> web.Response:
    app = request.app
    if app[ops_state_key].draining:
        raise ServiceUnavailable(
            "Not ready: the server is shutting down", details={"server": "draining"}
        )
    redis = app[appkeys.rate_limiter_key] if app[appkeys.settings_key].redis_url else None
    mongodb, redis_state = await asyncio.gather(
        mongo_ready(app[appkeys.mongo_key]), limiter_ready(redis)
    )
    checks = {"mongodb": mongodb, "redis": redis_state}
    failing = [name for name, state in checks.items() if state == UNAVAILABLE]
    if failing:
        raise ServiceUnavailable(
            f"Not ready: {' and '.join(failing)} failed its check (no answer within "
            f"{READINESS_TIMEOUT_SECONDS:g} s, or an error such as a refused connection, TLS "
            "or authentication; the server log says which)",
            details=checks,
            headers={"Retry-After": "1"},
        )
    return web.json_response({"status": "ok", "checks": checks}, headers=NO_STORE)


async def metrics_page(request: web.Request) -> web.Response:
    body = metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE, **NO_STORE})


async def _mark_draining(app: web.Application) -> None:
    """on_shutdown: runs when the server stops listening, before in-flight requests end."""
    app[ops_state_key].draining = True


def setup_ops(app: web.Application) -> None:
    """The operations routes. Call after setup_docs: they stay out of the API document."""
    app[ops_state_key] = OpsState()
    app.on_shutdown.append(_mark_draining)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
