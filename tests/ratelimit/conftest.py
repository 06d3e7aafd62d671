"""Fixtures for the rate-limiter tests: private redis-servers, never a shared one.

Over TCP (the session's ``redis_server`` from tests/conftest.py), TLS, a unix socket and a
3-master Redis Cluster, each started once per session on first use.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from pollybot_leads.ratelimit.redis_bucket import RedisTokenBucket
from tests.conftest import redis_unavailable
from tests.redis_server import RedisCluster as RedisClusterProcesses
from tests.redis_server import RedisServer, RedisServerError, find_redis_server, free_port


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A client of the session server, which is flushed (data and scripts) first."""
    if not redis_server.running:  # a test stopped it: bring it back
        redis_server.start()
    client = Redis.from_url(redis_server.url)
    try:
        await client.flushall()
        await client.script_flush()
        yield client
    finally:
        await client.aclose()


TRANSPORTS = ("tcp", "tls", "unix", "cluster")


@dataclass
class Target:
    """A Redis to run the bucket against: its URL, and a redis-py client to inspect it
    with (an independent client: what the bucket stored, seen from outside)."""

    transport: str
    url: str
    inspect_url: str

    def inspector(self) -> Redis | RedisCluster:
        if self.transport == "cluster":
            return RedisCluster.from_url(self.inspect_url)
        return Redis.from_url(self.inspect_url)


def _started(make: Callable[[], Any], what: str) -> Any:
    if find_redis_server() is None:
        redis_unavailable("redis-server not found (set REDIS_SERVER_BIN or put it on PATH)")
    try:
        return make().start()
    except RedisServerError as exc:
        redis_unavailable(f"could not start {what}: {exc}")


@pytest.fixture(scope="session")
def tls_redis_server() -> Iterator[RedisServer]:
    """A private redis-server on a TLS port only, its certificates made by openssl."""
    server = _started(lambda: RedisServer(tls=True), "redis-server with TLS")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def unix_redis_server() -> Iterator[RedisServer]:
    """A private redis-server on a unix socket only."""
    server = _started(lambda: RedisServer(unix=True), "redis-server on a unix socket")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterProcesses]:
    """A private 3-master Redis Cluster (about 2 s to start, once per session)."""
    cluster = _started(RedisClusterProcesses, "a Redis Cluster")
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """How the bucket reaches Redis: tests using it run over every transport."""
    return request.param


@pytest.fixture
def redis_target(transport: str, request: pytest.FixtureRequest) -> Target:
    if transport == "tcp":
        server: RedisServer = request.getfixturevalue("redis_server")
        if not server.running:  # a test stopped it: bring it back
            server.start()
        return Target(transport, server.url, server.url)
    if transport == "tls":
        server = request.getfixturevalue("tls_redis_server")
        return Target(transport, server.url, server.url)
    if transport == "unix":
        server = request.getfixturevalue("unix_redis_server")
        return Target(transport, server.url, server.url)
    cluster: RedisClusterProcesses = request.getfixturevalue("redis_cluster")
    first = cluster.nodes[0]
    return Target(transport, cluster.url, f"redis://{first.host}:{first.port}")


@pytest.fixture
async def target_client(redis_target: Target) -> AsyncIterator[Redis | RedisCluster]:
    """A redis-py client of the target, which is flushed (data and scripts) first."""
    client = redis_target.inspector()
    try:
        await client.flushall()
        await client.script_flush()
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def make_bucket(
    target_client: Redis | RedisCluster, redis_target: Target
) -> AsyncIterator[Callable[..., RedisTokenBucket]]:
    """Build RedisTokenBuckets (from the target's URL unless ``client=`` is given).

    Parametrized: every test using it runs over TCP, TLS, a unix socket and a Cluster.
    """
    made: list[RedisTokenBucket] = []

    def make(client: Any = None, **kwargs: Any) -> RedisTokenBucket:
        kwargs.setdefault("timeout_ms", 2000)
        bucket = RedisTokenBucket(redis_target.url if client is None else client, **kwargs)
        made.append(bucket)
        return bucket

    try:
        yield make
    finally:
        for bucket in made:
            await bucket.close()


PASSWORD = "s3cret:p@ss/word"  # needs percent-encoding in a URL


class PasswordRedis:
    """A private redis-server started with ``--requirepass`` (tests.redis_server's helper
    checks readiness with a PING that such a server refuses, hence this small twin)."""

    def __init__(self, binary: str, password: str) -> None:
        self.host, self.port, self.password = "127.0.0.1", free_port(), password
        self._tmp = tempfile.TemporaryDirectory(prefix="pb-redis-auth-")
        self._proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", self.host, "--save", "",
             "--appendonly", "no", "--dir", self._tmp.name, "--daemonize", "no",
             "--logfile", str(Path(self._tmp.name) / "redis.log"),
             "--requirepass", password],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def url(self, userinfo: str | None = None, db: int = 0) -> str:
        if userinfo is None:
            userinfo = ":" + quote(self.password, safe="")
        return f"redis://{userinfo}@{self.host}:{self.port}/{db}"

    def wait(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RedisServerError("redis-server --requirepass exited")
            try:
                with SyncRedis(host=self.host, port=self.port, password=self.password) as client:
                    if client.ping():
                        return
            except RedisError:
                time.sleep(0.02)
        raise RedisServerError("redis-server --requirepass did not answer")

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._tmp.cleanup()


@pytest.fixture
def password_redis() -> Iterator[PasswordRedis]:
    """A private redis-server that wants the password :data:`PASSWORD`."""
    binary = find_redis_server()
    if binary is None:
        redis_unavailable("redis-server not found (set REDIS_SERVER_BIN or put it on PATH)")
    assert binary is not None
    server = PasswordRedis(binary, PASSWORD)
    try:
        server.wait()
    except RedisServerError as exc:
        server.close()
        redis_unavailable(f"could not start redis-server --requirepass: {exc}")
    try:
        yield server
    finally:
        server.close()
