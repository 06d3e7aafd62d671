"""Small assertions shared by the HTTP tests."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import ClientResponse

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
LEAD_ID = re.compile(r"^lead_[0-9a-f]{16}$")


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
