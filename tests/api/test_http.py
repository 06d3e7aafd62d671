import asyncio
import logging

import pytest

from .helpers import create_lead, data_of, error_of


async def test_unknown_route_is_404_in_the_envelope(api):
    resp = await api.get("/nope")
    await error_of(resp, 404, "NOT_FOUND")


async def test_wrong_method_is_405_in_the_envelope(api, tenant):
    resp = await api.patch(
        tenant.lead_url("lead_0123456789abcdef"), json={}, headers=tenant.headers
    )
    await error_of(resp, 405, "METHOD_NOT_ALLOWED")
    assert "PUT" in resp.headers["Allow"]
    resp = await api.delete(tenant.leads_url, headers=tenant.headers)
    await error_of(resp, 405, "METHOD_NOT_ALLOWED")


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
        "application/json; charset=latin-1",
        "multipart/form-data; boundary=x",
    ],
)
async def test_other_content_types_are_415(api, tenant, content_type):
    resp = await api.post(
        tenant.leads_url,
        data=b'{"name": "A", "email": "a@b.co"}',
        headers={**tenant.headers, "Content-Type": content_type},
    )
    await error_of(resp, 415, "UNSUPPORTED_MEDIA_TYPE")


async def test_charset_is_optional(api, tenant):
    resp = await api.post(
        tenant.leads_url,
        data=b'{"name": "A", "email": "a@b.co"}',
        headers={**tenant.headers, "Content-Type": "application/json; charset=utf-8"},
    )
    await data_of(resp, 201)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b"null",
        b"[]",
        b'"str"',
        b"42",
        b"{'name': 'A'}",
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'{"a": 1e999}',
        b'{"a": 1, "a": 2}',
        b"\xff\xfe{}",
        b'{"name": "\\ud800", "email": "a@b.co"}',
        b"[" * 30000 + b"]" * 30000,
        b'{"metadata": {"n": 123456789012345678901234567890}, "name": "A", "email": "a@b.co"}',
    ],
)
async def test_invalid_json_is_400_and_creates_nothing(api, tenant, raw):
    resp = await api.post(
        tenant.leads_url, data=raw, headers={**tenant.headers, "Content-Type": "application/json"}
    )
    await error_of(resp, 400, "INVALID_JSON")
    listing = await data_of(await api.get(tenant.leads_url, headers=tenant.headers))
    assert listing["pagination"]["total"] == 0


async def test_body_over_the_limit_is_413(api, tenant, settings):
    big = b'{"name": "A", "email": "a@b.co", "metadata": {"x": "' + b"y" * 70000 + b'"}}'
    resp = await api.post(
        tenant.leads_url, data=big, headers={**tenant.headers, "Content-Type": "application/json"}
    )
    await error_of(resp, 413, "PAYLOAD_TOO_LARGE")

    async def chunks():
        for _ in range(settings.max_body_bytes // 1000 + 2):
            yield b" " * 1000

    resp = await api.post(
        tenant.leads_url,
        data=chunks(),
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    await error_of(resp, 413, "PAYLOAD_TOO_LARGE")
    lead = await create_lead(api, tenant)
    resp = await api.put(
        tenant.lead_url(lead["id"]),
        data=big,
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    await error_of(resp, 413, "PAYLOAD_TOO_LARGE")


async def test_request_id_is_echoed_when_sane_else_generated(api, tenant):
    resp = await api.get(tenant.leads_url, headers={**tenant.headers, "X-Request-Id": "abc-123"})
    assert resp.headers["X-Request-Id"] == "abc-123"
    resp = await api.get(tenant.leads_url, headers={**tenant.headers, "X-Request-Id": "bad id\t!"})
    assert resp.headers["X-Request-Id"] not in ("", "bad id\t!")
    resp = await api.get("/nope", headers={"X-Request-Id": "r-404"})
    assert resp.headers["X-Request-Id"] == "r-404"
    assert (await resp.json())["error"]["requestId"] == "r-404"


async def test_unknown_query_parameters_are_refused_on_get_and_put(api, tenant):
    lead = await create_lead(api, tenant)
    resp = await api.get(
        tenant.lead_url(lead["id"]), params={"expand": "all"}, headers=tenant.headers
    )
    assert set((await error_of(resp, 400, "VALIDATION_ERROR"))["details"]) == {"expand"}
    resp = await api.put(
        tenant.lead_url(lead["id"]),
        params={"dryRun": "1"},
        json={"name": "New"},
        headers=tenant.headers,
    )
    assert set((await error_of(resp, 400, "VALIDATION_ERROR"))["details"]) == {"dryRun"}
    assert (await data_of(await api.get(tenant.lead_url(lead["id"]), headers=tenant.headers)))[
        "name"
    ] == lead["name"]


async def test_no_response_leaks_internals(api, tenant):
    resp = await api.post(
        tenant.leads_url,
        data=b'{"name": {"$gt": ""}, "email": "a@b.co"}',
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    text = await resp.text()
    assert resp.status == 400
    for leak in ("Traceback", "pymongo", "bson", "marshmallow", "Error(", 'File "'):
        assert leak not in text


async def test_a_client_that_leaves_mid_body_is_no_server_error(api, tenant, caplog):
    """A POST whose client closes the connection before its body is all sent creates
    nothing, is logged as the client's leaving (499), and is no error of the server."""
    before = await data_of(await api.get(tenant.leads_url, headers=tenant.headers))
    host, port = api.server.host, api.server.port
    _reader, writer = await asyncio.open_connection(host, port)
    head = (
        f"POST {tenant.leads_url} HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {tenant.key}\r\nContent-Type: application/json\r\n"
        "Content-Length: 500\r\n\r\n"
    )
    with caplog.at_level(logging.INFO):
        writer.write(head.encode() + b'{"name": "Half", "email": "half@example.com"')
        await writer.drain()
        await asyncio.sleep(0.2)  # the handler is reading the body
        writer.close()
        await writer.wait_closed()
        await asyncio.sleep(0.3)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    access = [r for r in caplog.records if getattr(r, "access", None)]
    assert [r.access["status"] for r in access if r.access["method"] == "POST"] == [499]
    after = await data_of(await api.get(tenant.leads_url, headers=tenant.headers))
    assert after["pagination"]["total"] == before["pagination"]["total"]
