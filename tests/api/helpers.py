"""Small assertions shared by the HTTP tests."""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
LEAD_ID = re.compile(r"^lead_[0-9a-f]{16}$")
FROZEN = 0.001  # tokens per second: no refill worth counting during a test
LIMIT_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")

# The ``serve`` fixture (tests/api/conftest.py): starts an app with changed settings.
Serve = Callable[..., Awaitable[TestClient]]


async def error_of(resp: ClientResponse, status: int, code: str) -> dict[str, Any]:
    """The response is the error envelope with this status and code; returns the error."""
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert body["success"] is False
    assert body["error"]["code"] == code, body
    assert body["error"]["requestId"] == resp.headers["X-Request-Id"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


async def data_of(resp: ClientResponse, status: int = 200) -> Any:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert body["success"] is True
    return body["data"]


async def create_lead(api, tenant, **fields: Any) -> dict[str, Any]:
    payload = {"name": "John Doe", "email": "john.doe@example.com", **fields}
    resp = await api.post(tenant.leads_url, json=payload, headers=tenant.headers)
    return await data_of(resp, 201)


def limits(resp: ClientResponse) -> tuple[int, int, int]:
    """(Limit, Remaining, Reset) as the client reads them; all three must be there."""
    return tuple(int(resp.headers[name]) for name in LIMIT_HEADERS)  # type: ignore[return-value]


def no_limit_headers(resp: ClientResponse) -> bool:
    return not any(name in resp.headers for name in LIMIT_HEADERS)


async def refused(resp: ClientResponse) -> int:
    """The response is a 429 RATE_LIMITED envelope; returns its Retry-After."""
    await error_of(resp, 429, "RATE_LIMITED")
    retry_after = int(resp.headers["Retry-After"])
    assert retry_after >= 1
    return retry_after


def bad_secret() -> str:
    """Well-formed but unknown: no key has it."""
    return "sk-workspace_" + secrets.token_urlsafe(32)
