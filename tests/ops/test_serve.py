"""`pollybot-leads serve --workers 2` as an operator runs it: one port, metrics that add
up over the workers, hostile requests answered in the envelope and never logged with
their secret, and a SIGTERM that lets a request in flight finish before exiting 0."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import ClientSession, TCPConnector
from prometheus_client.parser import text_string_to_metric_families

from pollybot_leads.store.embedded import free_port, port_open
from tests.conftest import Tenant, make_tenant

from .conftest import Served

LEADS_ROUTE = "/api/v1/chatbots/{chatbotId}/leads"


@pytest.fixture(scope="module")
def served(settings, tmp_path_factory) -> Iterator[Served]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PB_CONFIG")}
    env.update(
        MONGODB_URI=settings.mongodb_uri,
        MONGODB_DATABASE=settings.mongodb_database,
        PB_CONFIG="test",
        LOG_LEVEL="INFO",
        LOG_FORMAT="json",
        CURSOR_SECRET="serve-test",
    )
    server = Served(env, tmp_path_factory.mktemp("serve") / "server.log", "--workers", "2")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def served_tenant(accounts) -> AsyncIterator[Tenant]:
    yield await make_tenant(accounts)


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


def value(text: str, name: str, **labels: str) -> float:
    return sum(
        v for got, v in samples(text, name) if all(got.get(k) == x for k, x in labels.items())
    )


async def scrape(base: str) -> str:
    async with ClientSession(connector=TCPConnector(force_close=True)) as http:
        async with http.get(base + "/metrics") as resp:
            assert resp.status == 200
            return await resp.text()


def json_lines(log: str) -> list[dict]:
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


async def test_two_workers_share_the_port_and_their_metrics_add_up(served, served_tenant):
    tenant = served_tenant
    labels = {"route": LEADS_ROUTE, "method": "GET", "status": "200"}
    before = value(await scrape(served.base), "pollybot_http_requests_total", **labels)
    n = 40
    # A new connection each: the kernel spreads connections (not requests) over workers.
    async with ClientSession(connector=TCPConnector(force_close=True)) as http:
        for _ in range(n):
            async with http.get(served.base + tenant.leads_url, headers=tenant.headers) as resp:
                assert resp.status == 200
    for _ in range(6):  # whichever worker answers the scrape, the totals are all workers'
        text = await scrape(served.base)
        assert value(text, "pollybot_http_requests_total", **labels) == before + n
        assert (
            value(
                text,
                "pollybot_http_request_duration_seconds_count",
                route=LEADS_ROUTE,
                method="GET",
            )
            >= before + n
        )
        assert (
            value(text, "pollybot_ratelimit_decisions_total", bucket="key", decision="allowed")
            >= before + n
        )
        pids = {got["pid"] for got, v in samples(text, "pollybot_worker_up") if v == 1}
        assert len(pids) == 2
        assert tenant.chatbot_id not in text
    served_by = Counter(
        line["pid"] for line in json_lines(served.log()) if line.get("keyId") == tenant.key_id
    )
    assert sum(served_by.values()) == n and len(served_by) == 2, served_by


def exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes, read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return int(lines[0].split()[1]), headers, body


async def test_hostile_requests_get_the_envelope_and_never_log_the_secret(served, served_tenant):
    key = served_tenant.key
    path = served_tenant.leads_url.encode()
    hostile = [
        b"GET "
        + path
        + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + key.encode()
        + b"\x00\r\n\r\n",
        b"GET "
        + path
        + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + key.encode()
        + b"B" * 9000
        + b"\r\n\r\n",
        b"GET "
        + path
        + b" HTTP/1.1\r\nHost: x\r\nX-Note: "
        + b"x" * 9000
        + key.encode()
        + b"\r\n\r\n",
        b"GET /healthz\x01" + key.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    flood = 30
    before = value(await scrape(served.base), "pollybot_http_malformed_requests_total")
    started = time.monotonic()
    for data in hostile + [hostile[0]] * flood:
        status, headers, body = parse(exchange(served.port, data))
        assert status == 400 and headers["content-type"].startswith("application/json")
        assert headers["server"] == "pollybot-leads" and headers["cache-control"] == "no-store"
        error = json.loads(body)["error"]
        assert json.loads(body)["success"] is False and error["code"] == "BAD_REQUEST"
        assert error["requestId"] == headers["x-request-id"]
        assert key.encode() not in body
    elapsed = time.monotonic() - started
    sent = len(hostile) + flood
    text = await scrape(served.base)
    assert value(text, "pollybot_http_malformed_requests_total") == before + sent

    time.sleep(0.3)  # let the workers' log lines reach the file
    log = served.log()
    secret = key.removeprefix("sk-workspace_")
    assert secret not in log and key not in log
    assert "Traceback" not in log and "Authorization" not in log
    lines = [line for line in json_lines(log) if line["logger"] == "pollybot_leads.malformed"]
    # At most a burst of 5 and then 1 a second, per worker; one line per request.
    assert 2 <= len(lines) <= 2 * (5 + int(elapsed) + 1), len(lines)
    assert len(lines) < sent
    for line in lines:
        assert re.fullmatch(
            r"rejected a malformed HTTP request from 127\.0\.0\.1: \w+"
            r"( \(\d+ more since the previous line, not logged\))?",
            line["message"],
        ), line
        assert line["level"] == "WARNING" and re.fullmatch(r"[0-9a-f]{32}", line["requestId"])


def test_an_unread_body_does_not_hold_the_connection_open(served, served_tenant):
    """A declared 100 MB body gets its 413 and the connection closes within about 1 s."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=15) as sock:
        started = time.monotonic()
        sock.sendall(
            f"POST {served_tenant.leads_url} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {served_tenant.key}\r\nContent-Type: application/json\r\n"
            "Content-Length: 100000000\r\nConnection: close\r\n\r\n".encode()
        )
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
        closed_after = time.monotonic() - started
    status, _, body = parse(raw)
    assert status == 413 and json.loads(body)["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert closed_after < 3.0  # aiohttp's default lingering kept it 10 s


def test_every_access_line_is_json_with_its_request_id(served):
    access = [
        line for line in json_lines(served.log()) if line["logger"] == "pollybot_leads.access"
    ]
    assert access
    for line in access:
        assert set(line) >= {"method", "route", "status", "durationMs", "keyId", "requestId"}
        assert line["route"] in (LEADS_ROUTE, "/metrics", "/healthz", "/readyz"), line


def test_sigterm_drains_a_request_in_flight_then_all_exit_0(tmp_path):
    """Embedded store, 2 workers: the parent starts the store once and the workers share it.

    The request is held in flight by a stalled store (SIGSTOP): it has reached its
    handler when SIGTERM arrives, and is answered once the store resumes, after the
    server has stopped listening.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MONGODB_URI", "REDIS_URL", "MONGODB_DATABASE", "PB_CONFIG")
    }
    store_port = free_port()
    data_dir = tmp_path / "var"
    env.update(
        PB_DATA_DIR=str(data_dir),
        PB_EMBEDDED_PORT=str(store_port),
        LOG_LEVEL="INFO",
        DRAIN_SECONDS="5",
        MONGODB_TIMEOUT_MS="10000",  # the request waits for the stalled store, not a 503
    )
    server = Served(env, tmp_path / "server.log", "--workers", "2").start()
    store_pid = int((data_dir / "secantusdb.pid").read_text().split()[0])
    stalled = False
    try:
        assert "Workers:    2 processes" in server.banner
        key = re.search(r"Bearer (sk-workspace_[A-Za-z0-9_-]+)", server.banner).group(1)
        url = re.search(r"curl -s -X POST \S+?(/api/v1/\S+)", server.banner).group(1)
        body = json.dumps({"name": "Late Arrival", "email": "late@example.com"}).encode()
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
            os.kill(store_pid, signal.SIGSTOP)
            stalled = True
            sock.sendall(
                f"POST {url} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            time.sleep(0.5)  # the request is in its handler, waiting for the store
            server.signal(signal.SIGTERM)
            deadline = time.monotonic() + 5
            while server.listening() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not server.listening()  # no new connections while draining
            os.kill(store_pid, signal.SIGCONT)
            stalled = False
            raw = b""
            while chunk := sock.recv(65536):
                raw += chunk
        status, _, answer = parse(raw)  # and the server closed the connection
        assert status == 201, raw
        assert json.loads(answer)["data"]["name"] == "Late Arrival"
        assert server.wait(30) == 0
        assert not port_open("127.0.0.1", store_port)  # the parent stopped the store
        log = server.log()
        assert log.count("draining requests in flight for up to 5 s") == 2
    finally:
        if stalled:
            os.kill(store_pid, signal.SIGCONT)
        server.stop()
