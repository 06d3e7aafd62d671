"""Fixtures for the rate-limiter tests: a private redis-server, never the shared one."""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import RedisError

from pollybot_leads.ratelimit.redis_bucket import RedisTokenBucket
from tests.conftest import redis_unavailable
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


# A query option the lean client leaves to redis-py, harmless to redis-py (RESP2 is its
# default): a bucket built from such a URL takes the redis-py path, pool and all.
REDIS_PY_URL_SUFFIX = "?protocol=2"


@pytest.fixture(params=["resp", "redis-py"])
def client_kind(request: pytest.FixtureRequest) -> str:
    """Which client a bucket built from a URL uses: the lean RespClient or redis-py's."""
    return request.param


def bucket_url(server: RedisServer, kind: str) -> str:
    return server.url + (REDIS_PY_URL_SUFFIX if kind == "redis-py" else "")


@pytest.fixture
async def make_bucket(
    redis_client: Redis, redis_server: RedisServer, client_kind: str
) -> AsyncIterator[Callable[..., RedisTokenBucket]]:
    """Build RedisTokenBuckets (own client from the URL unless ``client=`` is given).

    Parametrized: every test using it runs with the lean client and with redis-py's.
    """
    made: list[RedisTokenBucket] = []

    def make(client: Redis | str | None = None, **kwargs: Any) -> RedisTokenBucket:
        kwargs.setdefault("timeout_ms", 2000)
        url = bucket_url(redis_server, client_kind)
        bucket = RedisTokenBucket(url if client is None else client, **kwargs)
        if client is None:
            assert bucket.lean == (client_kind == "resp")
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
