"""/healthz, /readyz and /metrics through HTTP on the app the factory builds."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY
from pymongo.errors import ServerSelectionTimeoutError

from pollybot_leads.app import create_app
from pollybot_leads.ops.endpoints import limiter_ready, mongo_ready
from pollybot_leads.store.client import store_errors, unavailable
from pollybot_leads.store.embedded import free_port
from pollybot_leads.telemetry import metrics
from pollybot_leads.telemetry.logs import RequestIdFilter
from tests.api.helpers import error_of


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def api_with_dead_redis(settings) -> AsyncIterator[TestClient]:
    """Redis configured on a port where nothing listens."""
    app = create_app(settings.replace(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    client = TestClient(TestServer(app))
    await client.start_server()
    yield client
    await client.close()


@pytest.fixture
async def api_with_redis(settings, redis_server) -> AsyncIterator[TestClient]:
    client = TestClient(TestServer(create_app(settings.replace(redis_url=redis_server.url))))
    await client.start_server()
    yield client
    await client.close()


async def test_healthz_needs_no_key_and_spends_no_tokens(api):
    resp = await api.get("/healthz")
    assert resp.status == 200 and await resp.json() == {"status": "ok"}
    assert "X-RateLimit-Limit" not in resp.headers and resp.headers["X-Request-Id"]
    assert resp.headers["Cache-Control"] == "no-store"


async def test_readyz_checks_mongodb_and_says_redis_is_not_configured(api):
    resp = await api.get("/readyz")
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body == {"status": "ok", "checks": {"mongodb": "ok", "redis": "not configured"}}
    assert "X-RateLimit-Limit" not in resp.headers


async def test_readyz_with_redis_up(api_with_redis):
    resp = await api_with_redis.get("/readyz")
    assert resp.status == 200
    assert (await resp.json())["checks"] == {"mongodb": "ok", "redis": "ok"}


async def test_readyz_names_redis_when_it_does_not_answer(api_with_dead_redis):
    started = time.monotonic()
    resp = await api_with_dead_redis.get("/readyz")
    assert time.monotonic() - started < 1.5
    error = await error_of(resp, 503, "SERVICE_UNAVAILABLE")
    assert error["details"] == {"mongodb": "ok", "redis": "unavailable"}
    assert "redis" in error["message"] and "mongodb" not in error["message"]
    assert "the server log says which" in error["message"]  # not "did not answer": it may have
    assert resp.headers["Retry-After"] == "1"


class SlowMongo:
    def __init__(self, seconds: float = 0.0, fail: bool = False) -> None:
        self.seconds, self.fail = seconds, fail

    async def ping(self) -> None:
        await asyncio.sleep(self.seconds)
        if self.fail:
            raise ServerSelectionTimeoutError("no server")


class DeadLimiter:
    async def ping(self, timeout: float) -> bool:
        return False


async def test_a_store_that_does_not_answer_within_a_second_is_not_ready(caplog):
    assert await mongo_ready(SlowMongo()) == "ok"
    assert await mongo_ready(SlowMongo(fail=True)) == "unavailable"
    assert "mongodb ping failed: ServerSelectionTimeoutError('no server')" in caplog.text
    started = time.monotonic()
    assert await mongo_ready(SlowMongo(seconds=5), timeout=0.2) == "unavailable"
    assert time.monotonic() - started < 0.6
    assert await limiter_ready(None) == "not configured"
    assert await limiter_ready(DeadLimiter()) == "unavailable"


async def test_readyz_is_503_while_draining(settings):
    from pollybot_leads.ops.state import ops_state_key

    app = create_app(settings)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        app[ops_state_key].draining = True  # what on_shutdown does on SIGTERM
        error = await error_of(await client.get("/readyz"), 503, "SERVICE_UNAVAILABLE")
        assert error["details"] == {"server": "draining"}
        assert (await client.get("/healthz")).status == 200
    finally:
        await client.close()


async def test_metrics_count_requests_by_route_template_method_and_status(api, tenant):
    route = "/api/v1/chatbots/{chatbotId}/leads"
    labels = {"route": route, "method": "GET", "status": "200"}
    before = sample("pollybot_http_requests_total", **labels)
    before_hist = sample("pollybot_http_request_duration_seconds_count", route=route, method="GET")
    before_key = sample("pollybot_ratelimit_decisions_total", bucket="key", decision="allowed")
    before_bad = sample(
        "pollybot_ratelimit_decisions_total", bucket="auth_failure", decision="allowed"
    )
    before_404 = sample(
        "pollybot_http_requests_total", route="unmatched", method="PATCH", status="404"
    )
    for _ in range(3):
        assert (await api.get(tenant.leads_url, headers=tenant.headers)).status == 200
    bad = {"Authorization": "Bearer sk-workspace_" + "A" * 43}
    assert (await api.get(tenant.leads_url, headers=bad)).status == 401
    assert (await api.patch(f"/no/such/{tenant.chatbot_id}")).status == 404

    assert sample("pollybot_http_requests_total", **labels) == before + 3
    assert (
        sample("pollybot_http_request_duration_seconds_count", route=route, method="GET")
        == before_hist + 4  # the 401 too: latency is by route and method
    )
    assert (
        sample("pollybot_ratelimit_decisions_total", bucket="key", decision="allowed")
        == before_key + 3
    )
    assert (
        sample("pollybot_ratelimit_decisions_total", bucket="auth_failure", decision="allowed")
        == before_bad + 1
    )
    assert (
        sample("pollybot_http_requests_total", route="unmatched", method="PATCH", status="404")
        == before_404 + 1
    )

    resp = await api.get("/metrics")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    assert "X-RateLimit-Limit" not in resp.headers
    text = await resp.text()
    for name in (
        "pollybot_http_requests_total",
        "pollybot_http_request_duration_seconds_bucket",
        "pollybot_http_requests_in_flight",
        "pollybot_ratelimit_decisions_total",
        "pollybot_store_errors_total",
        "pollybot_http_malformed_requests_total",
    ):
        assert name in text, name
    assert 'route="/api/v1/chatbots/{chatbotId}/leads"' in text
    assert tenant.chatbot_id not in text and "/no/such" not in text  # never a raw path
    # /metrics itself is in flight while it is rendered
    assert re.search(r"^pollybot_http_requests_in_flight [1-9]", text, re.M)


def test_store_errors_are_counted_as_timeouts_or_unreachable():
    from pymongo.errors import AutoReconnect, ExecutionTimeout

    def count(kind: str) -> float:
        return sample("pollybot_store_errors_total", kind=kind)

    timeouts, unreachable = count("timeout"), count("unreachable")
    unavailable()  # the request's hard deadline: no driver error
    for exc in (TimeoutError(), ExecutionTimeout("slow"), AutoReconnect("down")):
        try:
            raise exc
        except Exception:
            unavailable()
    assert (count("timeout"), count("unreachable")) == (timeouts + 3, unreachable + 1)


@pytest.fixture
def captured_logs() -> list[logging.LogRecord]:
    """Every record from pollybot_leads at INFO and up, through the request-id filter."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("pollybot_leads")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


async def test_a_conflict_in_a_transaction_is_no_error_in_the_log(captured_logs):
    """A write conflict inside a transaction is retried whole by its runner: it is not an
    ERROR line (a soak at 64 clients logged ten of them). Any other refusal still is."""
    from pymongo.errors import OperationFailure

    conflict = OperationFailure(
        "WriteConflict", 112, {"errorLabels": ["TransientTransactionError"], "code": 112}
    )
    refused = OperationFailure("bad", 2, {"code": 2})
    for exc in (conflict, refused):

        @store_errors
        async def write(exc: Exception = exc) -> None:
            raise exc

        with pytest.raises(OperationFailure):
            await write()
    assert [(r.levelname, r.getMessage()[:16]) for r in captured_logs] == [
        ("ERROR", "database refused")
    ]


async def test_every_line_of_a_request_carries_its_id_and_one_access_line(
    api_with_dead_redis, captured_logs
):
    resp = await api_with_dead_redis.get("/readyz", headers={"X-Request-Id": "probe-42"})
    assert resp.status == 503
    mine = [r for r in captured_logs if r.request_id == "probe-42"]
    assert any(r.name == "pollybot_leads.errors" for r in mine)  # the 503 warning
    access = [r for r in captured_logs if r.name == "pollybot_leads.access"]
    assert len(access) == 1 and access[0].request_id == "probe-42"
    assert access[0].access == {
        "method": "GET",
        "route": "/readyz",
        "status": 503,
        "durationMs": access[0].access["durationMs"],
        "keyId": None,
    }
    assert 0 < access[0].access["durationMs"] < 1500


async def test_the_access_line_names_the_key_and_holds_no_secret_or_body(
    api, tenant, captured_logs
):
    payload = {"name": "Ada Lovelace", "email": "ada@example.com", "phone": "+44 20 7946 0000"}
    resp = await api.post(tenant.leads_url, json=payload, headers=tenant.headers)
    assert resp.status == 201
    [line] = [r for r in captured_logs if r.name == "pollybot_leads.access"]
    assert line.request_id == resp.headers["X-Request-Id"]
    assert line.access["keyId"] == tenant.key_id and line.access["status"] == 201
    assert line.access["route"] == "/api/v1/chatbots/{chatbotId}/leads"
    text = line.getMessage() + repr(line.access)
    for secret in (tenant.key, "Ada", "ada@example.com", "7946", tenant.chatbot_id):
        assert secret not in text


async def test_probes_are_logged_at_debug_only(api, captured_logs):
    assert (await api.get("/healthz")).status == 200
    assert not [r for r in captured_logs if r.name == "pollybot_leads.access"]


def test_methods_outside_the_known_set_share_one_label():
    assert metrics.method_label("GET") == "GET" and metrics.method_label("BREW") == "OTHER"


async def test_responses_say_no_version_nosniff_and_api_answers_are_not_stored(api, tenant):
    resp = await api.get(tenant.leads_url, headers=tenant.headers)
    assert resp.status == 200
    assert resp.headers["Server"] == "pollybot-leads"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Cache-Control"] == "no-store"
    resp = await api.get("/no/such/route")  # an error outside the API: not stored either
    assert resp.status == 404 and resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["Server"] == "pollybot-leads"
    resp = await api.get("/api/docs")  # the docs page keeps its own caching rule
    assert resp.status == 200 and resp.headers["Cache-Control"] == "no-cache"
    assert "aiohttp" not in resp.headers["Server"]
