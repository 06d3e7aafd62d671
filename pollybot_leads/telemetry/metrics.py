"""Prometheus metrics (prometheus-client), one module-level object per metric.

With several worker processes the library's multiprocess mode is used: ``serve`` sets
``PROMETHEUS_MULTIPROC_DIR`` to a fresh directory before it starts the workers (the
library reads it when it is first imported, so it must be set in the worker's
environment from the start), each worker calls :func:`use_multiprocess`, and a scrape
of any worker adds up the files of all of them, dead ones included for the counters.

Labels are bounded: a route is its resource's template (``/api/v1/chatbots/{chatbotId}
/leads``, never the raw path), a method one of a fixed set; nothing else varies.
"""

from __future__ import annotations

import sys
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from ..ratelimit.base import BucketPolicy, Decision, RateLimiter, RateLimiterUnavailable

# No *_created series: the same output in one process and in multiprocess mode.
disable_created_metrics()

CONTENT_TYPE = CONTENT_TYPE_LATEST
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
UNMATCHED_ROUTE = "unmatched"  # no route: a 404, or a method the path does not allow

REQUESTS = Counter(
    "pollybot_http_requests",
    "HTTP requests answered, by route template, method and status",
    ("route", "method", "status"),
)
LATENCY = Histogram(
    "pollybot_http_request_duration_seconds",
    "Time from the request reaching the application to its response, by route and method",
    ("route", "method"),
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0),
)
IN_FLIGHT = Gauge(
    "pollybot_http_requests_in_flight",
    "Requests being handled now (all workers)",
    multiprocess_mode="livesum",
)
MALFORMED = Counter(
    "pollybot_http_malformed_requests",
    "Requests the HTTP parser rejected (answered 400 before reaching the application)",
)
RATELIMIT_DECISIONS = Counter(
    "pollybot_ratelimit_decisions",
    "Rate-limit decisions: bucket is 'key' (per API key) or 'auth_failure' (bad "
    "credentials, per client address); decision is allowed, limited (429), degraded "
    "(allowed without Redis) or unavailable (refused without Redis: 503)",
    ("bucket", "decision"),
)
STORE_ERRORS = Counter(
    "pollybot_store_errors",
    "Store calls answered with a 503: kind is 'timeout' (past the request's store "
    "budget) or 'unreachable' (no connection to the store)",
    ("kind",),
)
ADMISSION_REFUSED = Counter(
    "pollybot_admission_refused",
    "Requests refused with a 503 before any store work, because their predicted wait "
    "for the store would not leave them the time to be served (lane: read or write)",
    ("lane",),
)
WORKER_UP = Gauge(
    "pollybot_worker_up",
    "1 for each serving process; with several workers one series per live worker (pid)",
    multiprocess_mode="liveall",
)

_DECISIONS = {
    (bucket, decision): RATELIMIT_DECISIONS.labels(bucket, decision)
    for bucket in ("key", "auth_failure")
    for decision in ("allowed", "limited", "degraded", "unavailable")
}
for _kind in ("timeout", "unreachable"):
    STORE_ERRORS.labels(_kind)

_multiprocess_dir: str | None = None


def use_multiprocess(directory: str) -> None:
    """Scrapes of this process report every worker's values, from ``directory``."""
    global _multiprocess_dir
    _multiprocess_dir = directory


def exposition() -> bytes:
    """The Prometheus text format of every metric (of all workers, in multiprocess mode)."""
    if _multiprocess_dir is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=_multiprocess_dir)
    return generate_latest(registry)


# A request's two series, by (route, method, status): labels() costs more than the
# update itself, and the combinations are few.
_REQUEST_SERIES: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def count_request(route: str, method: str, status: int, seconds: float) -> None:
    """One answered request: REQUESTS by route, method and status; its LATENCY."""
    series = _REQUEST_SERIES.get((route, method, status))
    if series is None:
        series = (REQUESTS.labels(route, method, str(status)), LATENCY.labels(route, method))
        _REQUEST_SERIES[(route, method, status)] = series
    series[0].inc()
    series[1].observe(seconds)


def method_label(method: str) -> str:
    return method if method in METHODS else "OTHER"


def admission_refused(lane: str) -> None:
    ADMISSION_REFUSED.labels(lane).inc()


def store_unavailable() -> None:
    """Count a store failure that becomes a 503 (called by store.client.unavailable).

    It runs inside the ``except`` block that caught the driver's exception, if any: a
    timeout (``TimeoutError``, or a driver error whose ``timeout`` is true) or none at all
    (the request's hard deadline) counts as ``timeout``, anything else as ``unreachable``.
    """
    exc = sys.exc_info()[1]
    timed_out = exc is None or isinstance(exc, TimeoutError) or bool(getattr(exc, "timeout", 0))
    STORE_ERRORS.labels("timeout" if timed_out else "unreachable").inc()


def count_ratelimit_decision(bucket: str, decision: Decision | None) -> None:
    """One decision on a bucket of a kind, ``key`` or ``auth_failure``; None: the limiter
    could not be asked and refused (a 503)."""
    if decision is None:
        outcome = "unavailable"
    elif decision.degraded:
        outcome = "degraded"
    else:
        outcome = "allowed" if decision.allowed else "limited"
    _DECISIONS[bucket, outcome].inc()


class CountingRateLimiter:
    """A :class:`RateLimiter` that counts every take from the one it wraps as a decision
    on an API key's bucket (tokens given back are no decision).

    The authenticator counts the decisions on client addresses' failure buckets itself:
    only it knows whether a token it took was spent on a failure or given back when the
    key turned out good.
    """

    def __init__(self, inner: RateLimiter) -> None:
        self.inner = inner

    async def take(self, bucket: str, policy: BucketPolicy, cost: int = 1) -> Decision:
        try:
            decision = await self.inner.take(bucket, policy, cost)
        except RateLimiterUnavailable:
            count_ratelimit_decision("key", None)
            raise
        if cost > 0:
            count_ratelimit_decision("key", decision)
        return decision

    async def ping(self, timeout: float) -> bool:
        return await self.inner.ping(timeout)

    async def close(self) -> None:
        await self.inner.close()
