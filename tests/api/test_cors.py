"""CORS: off by default; with cors_origins, preflights are answered before auth and
responses to a listed origin (errors too) can be read by its pages."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from pollybot_leads.app import create_app
from pollybot_leads.settings import SettingsError, load_settings

from .helpers import error_of

APP_ORIGIN = "https://app.example.com"


def preflight_headers(origin: str, method: str = "POST") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type",
    }


async def _client(settings) -> TestClient:
    client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    return client


@pytest.fixture
async def cors_api(settings) -> AsyncIterator[TestClient]:
    client = await _client(settings.replace(cors_origins=(APP_ORIGIN,)))
    yield client
    await client.close()


async def test_cors_is_off_by_default(api, tenant):
    resp = await api.options(tenant.leads_url, headers=preflight_headers(APP_ORIGIN))
    await error_of(resp, 405, "METHOD_NOT_ALLOWED")
    assert "Access-Control-Allow-Origin" not in resp.headers
    resp = await api.get(tenant.leads_url, headers={**tenant.headers, "Origin": APP_ORIGIN})
    assert resp.status == 200 and "Access-Control-Allow-Origin" not in resp.headers


async def test_a_preflight_from_a_listed_origin_needs_no_key(cors_api, tenant):
    resp = await cors_api.options(
        tenant.lead_url("lead_0123456789abcdef"), headers=preflight_headers(APP_ORIGIN, "PUT")
    )
    assert resp.status == 204, await resp.text()
    assert resp.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    methods = {m.strip() for m in resp.headers["Access-Control-Allow-Methods"].split(",")}
    assert {"GET", "PUT", "DELETE"} <= methods and "POST" not in methods
    allowed = {h.strip() for h in resp.headers["Access-Control-Allow-Headers"].lower().split(",")}
    assert {"authorization", "content-type", "idempotency-key", "if-match"} <= allowed
    assert "if-none-match" in allowed
    assert int(resp.headers["Access-Control-Max-Age"]) > 0 and "Origin" in resp.headers["Vary"]
    assert "X-RateLimit-Limit" not in resp.headers


async def test_a_preflight_from_another_origin_or_to_no_route_is_refused(cors_api, tenant):
    resp = await cors_api.options(
        tenant.leads_url, headers=preflight_headers("https://evil.example")
    )
    await error_of(resp, 403, "ORIGIN_NOT_ALLOWED")
    assert "Access-Control-Allow-Origin" not in resp.headers
    resp = await cors_api.options("/api/v1/nothing/here", headers=preflight_headers(APP_ORIGIN))
    await error_of(resp, 404, "NOT_FOUND")


async def test_responses_to_a_listed_origin_are_readable_errors_included(cors_api, tenant):
    resp = await cors_api.get(tenant.leads_url, headers={**tenant.headers, "Origin": APP_ORIGIN})
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    exposed = {h.strip() for h in resp.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"X-Request-Id", "X-RateLimit-Remaining", "ETag", "Idempotent-Replayed"} <= exposed
    resp = await cors_api.get(tenant.leads_url, headers={"Origin": APP_ORIGIN})
    await error_of(resp, 401, "UNAUTHORIZED")
    assert resp.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    resp = await cors_api.get(
        tenant.leads_url, headers={**tenant.headers, "Origin": "https://evil.example"}
    )
    assert resp.status == 200 and "Access-Control-Allow-Origin" not in resp.headers
    assert "Origin" in resp.headers["Vary"]


async def test_a_star_allows_any_origin(settings, tenant):
    client = await _client(settings.replace(cors_origins=("*",)))
    try:
        resp = await client.options(
            tenant.leads_url, headers=preflight_headers("https://x.example")
        )
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == "https://x.example"
    finally:
        await client.close()


def test_cors_origins_come_from_the_environment_and_are_checked():
    s = load_settings({"CORS_ORIGINS": "https://a.example, http://localhost:3000/"})
    assert s.cors_origins == ("https://a.example", "http://localhost:3000")
    assert load_settings({}).cors_origins == ()
    for bad in ("https://a.example/app", "a.example", "ftp://a.example"):
        with pytest.raises(SettingsError, match="CORS_ORIGINS"):
            load_settings({"CORS_ORIGINS": bad})
