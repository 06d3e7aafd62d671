"""The RESP2 client (pollybot_leads.ratelimit.resp, resp_*) and the bucket on top of it.

Parser and encoding on bytes; the connection against small fake servers (replies dribbled
byte by byte, garbage, silence) and against real private redis-servers (pipelining, SELECT,
AUTH with ``--requirepass`` and ACL users, NOSCRIPT, a server killed mid-flight, restarts).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from pollybot_leads.ratelimit.base import BucketPolicy
from pollybot_leads.ratelimit.redis_bucket import (
    KEY_PREFIX,
    TAKE_SCRIPT,
    RedisRateLimiterUnavailable,
    RedisTokenBucket,
)
from pollybot_leads.ratelimit.resp import RespClient
from pollybot_leads.ratelimit.resp_protocol import (
    INCOMPLETE,
    MAX_DEPTH,
    AuthenticationError,
    NoScriptError,
    ReplyError,
    RespConnectionError,
    RespParser,
    RespProtocolError,
    pack_command,
)
from pollybot_leads.ratelimit.resp_url import ConnectionParams, TLSOptions, parse_url
from tests.ratelimit.conftest import PASSWORD, PasswordRedis
from tests.redis_server import RedisServer

FROZEN = 0.001
LOGGER_NAME = "tests.ratelimit.resp"


def plain(value: Any) -> Any:
    """Replies made comparable: an error reply becomes (class, message)."""
    if isinstance(value, ReplyError):
        return (type(value), str(value))
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def parse_all(parser: RespParser) -> list[Any]:
    replies = []
    while (reply := parser.gets()) is not INCOMPLETE:
        replies.append(plain(reply))
    return replies


# --- parser ----------------------------------------------------------------------------------

REPLIES: list[tuple[bytes, Any]] = [
    (b":42\r\n", 42),
    (b":-7\r\n", -7),
    (b"+OK\r\n", b"OK"),
    (b"$5\r\nhello\r\n", b"hello"),
    (b"$0\r\n\r\n", b""),
    (b"$-1\r\n", None),
    (b"$6\r\na\r\nb\r\n\r\n", b"a\r\nb\r\n"),  # binary-safe: CRLF inside a bulk string
    (b"*-1\r\n", None),
    (b"*0\r\n", []),
    (b"*4\r\n:1\r\n:49\r\n:100\r\n:0\r\n", [1, 49, 100, 0]),  # what the take script returns
    (b"*2\r\n*2\r\n:1\r\n$1\r\nx\r\n*0\r\n", [[1, b"x"], []]),
    (b"*3\r\n$-1\r\n+QUEUED\r\n-ERR nested\r\n", [None, b"QUEUED", (ReplyError, "ERR nested")]),
    (b"-ERR unknown command 'FOO'\r\n", (ReplyError, "ERR unknown command 'FOO'")),
    (b"-NOSCRIPT No matching script.\r\n", (NoScriptError, "NOSCRIPT No matching script.")),
    (b"-WRONGPASS invalid password\r\n", (AuthenticationError, "WRONGPASS invalid password")),
    (b"-NOAUTH Authentication required.\r\n", (AuthenticationError, "NOAUTH Authentication required.")),  # noqa: E501
    (b"-BUSY Redis is busy\r\n", (ReplyError, "BUSY Redis is busy")),
]  # fmt: skip
STREAM = b"".join(data for data, _ in REPLIES)
EXPECTED = [expected for _, expected in REPLIES]


@pytest.mark.parametrize(("data", "expected"), REPLIES)
def test_parser_reads_each_reply_type(data: bytes, expected: Any) -> None:
    parser = RespParser()
    parser.feed(data)
    assert parse_all(parser) == [expected]
    assert parser.buffered == 0


def test_parser_error_types() -> None:
    parser = RespParser()
    parser.feed(b"-NOSCRIPT x\r\n-ERR y\r\n")
    noscript, other = parser.gets(), parser.gets()
    assert isinstance(noscript, NoScriptError) and isinstance(noscript, ReplyError)
    assert type(other) is ReplyError


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 13, 64, len(STREAM)])
def test_parser_stream_in_chunks_of_any_size(size: int) -> None:
    parser = RespParser()
    got: list[Any] = []
    for start in range(0, len(STREAM), size):
        parser.feed(STREAM[start : start + size])
        got += parse_all(parser)
    assert got == EXPECTED
    assert parser.buffered == 0


def test_parser_stream_split_at_every_point() -> None:
    for cut in range(len(STREAM) + 1):
        for second in (cut, min(len(STREAM), cut + 3)):  # two and three pieces
            parser = RespParser()
            got: list[Any] = []
            for piece in (STREAM[:cut], STREAM[cut:second], STREAM[second:]):
                parser.feed(piece)
                got += parse_all(parser)
            assert got == EXPECTED, (cut, second)


# What the connection uses: replies(chunk), parsing in place while nothing is buffered.


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 13, 64, len(STREAM)])
def test_parser_replies_in_chunks_of_any_size(size: int) -> None:
    parser = RespParser()
    got: list[Any] = []
    for start in range(0, len(STREAM), size):
        got += [plain(r) for r in parser.replies(STREAM[start : start + size])]
    assert got == EXPECTED
    assert parser.buffered == 0


def test_parser_replies_split_at_every_point() -> None:
    stream = STREAM * 2
    for cut in range(len(stream) + 1):
        for second in (cut, min(len(stream), cut + 1), min(len(stream), cut + 9)):
            parser = RespParser()
            got: list[Any] = []
            for piece in (stream[:cut], stream[cut:second], stream[second:]):
                got += [plain(r) for r in parser.replies(piece)]
            assert got == EXPECTED * 2, (cut, second)
            assert parser.buffered == 0


def test_parser_replies_big_bulk_then_small_replies() -> None:
    value = os.urandom(200_000)
    stream = b"$%d\r\n%s\r\n:1\r\n*1\r\n:2\r\n" % (len(value), value)
    parser = RespParser()
    got: list[Any] = []
    for start in range(0, len(stream), 7000):
        got += parser.replies(stream[start : start + 7000])
    assert got == [value, 1, [2]]
    assert parser.buffered == 0


def test_parser_partial_reply_is_incomplete_until_its_last_byte() -> None:
    data = b"*4\r\n:1\r\n:49\r\n:100\r\n:0\r\n"
    parser = RespParser()
    for byte in data[:-1]:
        parser.feed(bytes([byte]))
        assert parser.gets() is INCOMPLETE
    parser.feed(data[-1:])
    assert parser.gets() == [1, 49, 100, 0]
    assert parser.gets() is INCOMPLETE


class CountingParser(RespParser):
    def __init__(self) -> None:
        super().__init__()
        self.parses = 0  # parses started at a reply's first byte

    def _parse(self, buf: bytearray, pos: int, depth: int) -> tuple[Any, int]:
        if pos == 0:
            self.parses += 1
        return super()._parse(buf, pos, depth)


@pytest.mark.parametrize("api", ["gets", "replies"])
def test_parser_does_not_reparse_a_long_bulk_string_on_every_read(api: str) -> None:
    value = os.urandom(1 << 20)
    data = b"$%d\r\n%s\r\n" % (len(value), value)
    parser = CountingParser()
    got: list[Any] = []
    for start in range(0, len(data), 1000):  # about 1000 reads
        chunk = data[start : start + 1000]
        if api == "gets":
            parser.feed(chunk)
            if (reply := parser.gets()) is not INCOMPLETE:
                got.append(reply)
        else:
            got += parser.replies(chunk)
    assert got == [value]
    assert parser.parses <= 3  # linear, not quadratic: not once per read


@pytest.mark.parametrize(
    "data",
    [b"!7\r\n", b":12x\r\n", b"$x\r\n", b"*two\r\n", b"$3\r\nabcd\r\n", b"\r\n"],
    ids=["type", "integer", "bulk-length", "array-length", "bulk-terminator", "empty"],
)
def test_parser_rejects_what_is_not_resp2(data: bytes) -> None:
    parser = RespParser()
    parser.feed(data)
    with pytest.raises(RespProtocolError):
        parser.gets()
    with pytest.raises(RespProtocolError):
        RespParser().replies(b":1\r\n" + data)


def test_parser_caps_nesting() -> None:
    deepest = b"*1\r\n" * MAX_DEPTH + b":1\r\n"  # MAX_DEPTH arrays around an integer
    parser = RespParser()
    reply = parser.replies(deepest)[0]
    for _ in range(MAX_DEPTH):
        reply = reply[0]
    assert reply == 1

    for data in (b"*1\r\n" * (MAX_DEPTH + 1) + b":1\r\n", b"*1\r\n" * 100_000):
        with pytest.raises(RespProtocolError, match="nested deeper"):
            RespParser().replies(data)
        fed = RespParser()
        fed.feed(data)
        with pytest.raises(RespProtocolError, match="nested deeper"):
            fed.gets()


# --- encoding and URLs -------------------------------------------------------------------------


def test_pack_command() -> None:
    assert pack_command("SET", b"k\r\n", 12, 1.5, "é") == (
        b"*5\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$2\r\n12\r\n$3\r\n1.5\r\n$2\r\n\xc3\xa9\r\n"
    )
    assert pack_command("PING") == b"*1\r\n$4\r\nPING\r\n"
    for bad in (True, None, object()):
        with pytest.raises(TypeError):
            pack_command("SET", "k", bad)
    with pytest.raises(ValueError):
        pack_command()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6390/0", ConnectionParams("127.0.0.1", 6390)),
        ("redis://cache", ConnectionParams("cache")),
        ("redis://cache/", ConnectionParams("cache")),
        ("redis://cache:6379/7", ConnectionParams("cache", db=7)),
        ("redis://cache?db=5", ConnectionParams("cache", db=5)),
        ("redis://cache/2?db=5", ConnectionParams("cache", db=5)),  # as redis-py: query wins
        ("redis://:pw@cache/1", ConnectionParams("cache", db=1, password="pw")),
        ("redis://al:pw@cache", ConnectionParams("cache", username="al", password="pw")),
        ("redis://:p%40ss%3Aw%2Fd@cache", ConnectionParams("cache", password="p@ss:w/d")),
        ("redis://[::1]:7000/3", ConnectionParams("::1", 7000, db=3)),
        ("redis://", ConnectionParams()),
    ],
)
def test_parse_url(url: str, expected: ConnectionParams) -> None:
    assert parse_url(url) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rediss://cache:6380/0", ConnectionParams("cache", 6380, tls=TLSOptions())),
        (
            "rediss://cache/0?ssl_ca_certs=/etc/ca.pem&ssl_check_hostname=false",
            ConnectionParams("cache", tls=TLSOptions(ca_certs="/etc/ca.pem", check_hostname=False)),
        ),
        (
            "rediss://cache?ssl_cert_reqs=none&ssl_certfile=/c.pem&ssl_keyfile=/k.pem",
            ConnectionParams(
                "cache", tls=TLSOptions(certfile="/c.pem", keyfile="/k.pem", cert_reqs="none")
            ),
        ),
        ("unix:///run/redis.sock", ConnectionParams(path="/run/redis.sock")),
        ("unix://:pw@/run/r.sock?db=3", ConnectionParams(path="/run/r.sock", db=3, password="pw")),
        (
            "redis+cluster://10.0.0.1:7000",
            ConnectionParams("10.0.0.1", 7000, cluster=True, seeds=(("10.0.0.1", 7000),)),
        ),
        (
            "rediss+cluster://:pw@a:7000?addr=b:7001&addr=[::1]:7002",
            ConnectionParams(
                "a",
                7000,
                password="pw",
                tls=TLSOptions(),
                cluster=True,
                seeds=(("a", 7000), ("b", 7001), ("::1", 7002)),
            ),
        ),
    ],
)
def test_parse_url_tls_unix_cluster(url: str, expected: ConnectionParams) -> None:
    assert parse_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "redis://cache:port/0",
        "redis://cache:99999/0",
        "redis://cache/x",
        "redis://c/-1",
        "redis://cache/0?socket_timeout=1",
        "redis://cache/0?ssl_ca_certs=/ca.pem",  # TLS options want rediss://
        "redis://cache/0?protocol=3",
        "http://cache/0",
        "unix://",
        "rediss://cache/0?ssl_cert_reqs=sometimes",
        "rediss://cache/0?ssl_check_hostname=perhaps",
        "redis+cluster://cache:7000/2",
        "redis+cluster://cache:7000?addr=cache",
    ],
)
def test_parse_url_malformed_or_unsupported(url: str) -> None:
    with pytest.raises(ValueError):
        parse_url(url)


def test_repr_hides_the_password() -> None:
    client = RespClient.from_url("redis://user:hunter2@cache:6379/3")
    assert "hunter2" not in repr(client) and "cache:6379/3" in repr(client)


# --- against scripted TCP peers: wire-level cases a real server does not produce ----------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class ScriptedRedisPeer:
    """A TCP server on a free port whose every connection is served by ``handler``: it
    sends replies byte by byte, garbage or nothing, to test the parser and connection
    handling. Store behaviour is tested against a real redis-server elsewhere."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass

    async def __aenter__(self) -> ScriptedRedisPeer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        for writer in self._writers:
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass
        await self._server.wait_closed()

    def url(self, suffix: str = "/0") -> str:
        return f"redis://127.0.0.1:{self.port}{suffix}"


async def read_command(reader: asyncio.StreamReader) -> list[bytes]:
    header = await reader.readuntil(b"\r\n")
    assert header[:1] == b"*"
    args = []
    for _ in range(int(header[1:-2])):
        size = int((await reader.readuntil(b"\r\n"))[1:-2])
        args.append((await reader.readexactly(size + 2))[:-2])
    return args


@pytest.fixture
async def closing() -> AsyncIterator[list[RespClient]]:
    """Clients to close at the end of the test."""
    clients: list[RespClient] = []
    yield clients
    for client in clients:
        await client.aclose()


async def test_replies_dribbled_byte_by_byte_reach_the_right_callers(
    closing: list[RespClient],
) -> None:
    async def dribble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(3):  # wait for all three, then answer them in one long trickle
            await read_command(reader)
        for byte in b"*4\r\n:1\r\n:49\r\n:100\r\n:0\r\n$5\r\nhello\r\n-NOSCRIPT gone\r\n":
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0)
        await reader.read()  # until the client closes

    async with ScriptedRedisPeer(dribble) as fake:
        client = RespClient.from_url(fake.url())
        closing.append(client)
        first, second, third = await asyncio.gather(
            client.execute_command("EVALSHA", "x", 1, "k"),
            client.execute_command("GET", "k"),
            client.execute_command("EVALSHA", "y", 0),
            return_exceptions=True,
        )
        assert first == [1, 49, 100, 0] and second == b"hello"
        assert isinstance(third, NoScriptError)
        assert client.connected  # an error reply is no connection failure
        await client.aclose()


async def test_handshake_is_pipelined_auth_then_select(closing: list[RespClient]) -> None:
    seen: list[list[bytes]] = []

    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_command(reader))
        seen.append(await read_command(reader))
        writer.write(b"+OK\r\n+OK\r\n")
        seen.append(await read_command(reader))
        writer.write(b"+PONG\r\n")
        await reader.read()

    async with ScriptedRedisPeer(server) as fake:
        client = RespClient.from_url(f"redis://al%40x:p%3Aw@127.0.0.1:{fake.port}/9")
        closing.append(client)
        assert await client.ping()
        assert seen == [[b"AUTH", b"al@x", b"p:w"], [b"SELECT", b"9"], [b"PING"]]
        await client.aclose()


async def test_garbage_fails_what_is_in_flight_and_the_next_command_reconnects(
    closing: list[RespClient],
) -> None:
    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            command = await read_command(reader)
            writer.write(b"?what\r\n" if command == [b"BAD"] else b"+PONG\r\n")

    async with ScriptedRedisPeer(server) as fake:
        client = RespClient.from_url(fake.url(), pool_size=1)  # one connection to break
        closing.append(client)
        assert await client.ping()
        bad, pending = await asyncio.gather(
            client.execute_command("BAD"), client.execute_command("PING"), return_exceptions=True
        )
        for failed in (bad, pending):  # both in flight: both fail, with the cause
            assert isinstance(failed, RespConnectionError)
            assert isinstance(failed.__cause__, RespProtocolError)
        assert not client.connected
        assert await client.ping()
        assert client.connections_made == 2 and fake.connections == 2
        await client.aclose()


async def test_a_reply_nobody_asked_for_drops_the_connection(closing: list[RespClient]) -> None:
    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_command(reader)
        writer.write(b"+PONG\r\n+SURPRISE\r\n")
        await reader.read()

    async with ScriptedRedisPeer(server) as fake:
        client = RespClient.from_url(fake.url())
        closing.append(client)
        assert await client.ping()
        for _ in range(100):
            if not client.connected:
                break
            await asyncio.sleep(0.01)
        assert not client.connected
        await client.aclose()


async def test_connect_timeout_covers_the_handshake(closing: list[RespClient]) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async with ScriptedRedisPeer(silent) as fake:
        client = RespClient.from_url(fake.url(suffix="/1"), connect_timeout=0.1)
        closing.append(client)
        start = time.perf_counter()
        with pytest.raises(TimeoutError):
            await client.ping()
        assert time.perf_counter() - start < 0.5
        assert not client.connected
        await client.aclose()


async def test_concurrent_first_commands_share_one_connect(closing: list[RespClient]) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            _, value = await read_command(reader)
            writer.write(b"$%d\r\n%s\r\n" % (len(value), value))

    async with ScriptedRedisPeer(echo) as fake:
        client = RespClient.from_url(fake.url())
        closing.append(client)
        replies = await asyncio.gather(*(client.execute_command("ECHO", i) for i in range(300)))
        assert replies == [str(i).encode() for i in range(300)]
        assert fake.connections == 1 and client.connections_made == 1
        await client.aclose()


# --- against a real redis-server -------------------------------------------------------------


@pytest.fixture
async def resp(redis_client: Redis, redis_server: RedisServer) -> AsyncIterator[RespClient]:
    """A RespClient of the (flushed) session server."""
    client = RespClient.from_url(redis_server.url, connect_timeout=2.0)
    try:
        yield client
    finally:
        await client.aclose()


async def test_commands_and_reply_types(resp: RespClient) -> None:
    assert not resp.connected  # lazily
    assert await resp.ping()
    assert await resp.execute_command("SET", "k", b"v\r\n\x00") == b"OK"
    assert await resp.execute_command("GET", "k") == b"v\r\n\x00"
    assert await resp.execute_command("GET", "missing") is None
    assert await resp.execute_command("INCRBY", "n", 41) == 41
    await resp.execute_command("RPUSH", "l", "a", "b")
    assert await resp.execute_command("LRANGE", "l", 0, -1) == [b"a", b"b"]
    with pytest.raises(ReplyError, match="WRONGTYPE"):
        await resp.execute_command("INCR", "l")
    assert await resp.execute_command("ECHO", "still fine") == b"still fine"
    assert resp.connections_made == 1


async def test_pipelined_concurrency_keeps_every_reply_with_its_command(
    resp: RespClient,
) -> None:
    values = [os.urandom(i % 50) for i in range(2000)]
    replies = await asyncio.gather(*(resp.execute_command("ECHO", v) for v in values))
    assert replies == values
    assert 1 <= resp.connections_made <= resp.pool_size
    assert resp.connections == resp.connections_made  # and lost none


async def test_a_large_reply_arrives_in_many_reads(resp: RespClient) -> None:
    value = os.urandom(4 << 20)
    await resp.execute_command("SET", "big", value)
    got, pong = await asyncio.gather(resp.execute_command("GET", "big"), resp.ping())
    assert got == value and pong


async def test_a_cancelled_command_leaves_the_connection_usable(resp: RespClient) -> None:
    assert await resp.ping()

    async def echo(value: int) -> Any:
        return await resp.execute_command("ECHO", value)

    tasks = [asyncio.create_task(echo(i)) for i in range(100)]
    await asyncio.sleep(0)  # all sent
    for task in tasks[::2]:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results[::2])
    assert results[1::2] == [str(i).encode() for i in range(1, 100, 2)]
    assert await resp.execute_command("ECHO", "after") == b"after"
    assert resp.connections == resp.connections_made  # none dropped


async def test_noscript_is_its_own_exception(resp: RespClient, redis_client: Redis) -> None:
    sha = hashlib.sha1(TAKE_SCRIPT.encode(), usedforsecurity=False).hexdigest()
    with pytest.raises(NoScriptError):
        await resp.evalsha(sha, 1, "pb:rl:x", 5, "1.0")
    assert await resp.script_load(TAKE_SCRIPT) == sha
    assert await resp.evalsha(sha, 1, "pb:rl:x", 5, "1.0") == [1, 4, 1000, 0]
    await redis_client.script_flush()
    with pytest.raises(NoScriptError):
        await resp.evalsha(sha, 1, "pb:rl:x", 5, "1.0")
    assert resp.connected


@pytest.mark.parametrize("suffix", ["/3", "/0?db=5"])
async def test_select_db(redis_server: RedisServer, redis_client: Redis, suffix: str) -> None:
    db = int(suffix.rsplit("=", 1)[-1].strip("/"))
    url = redis_server.url.rsplit("/", 1)[0] + suffix
    client = RespClient.from_url(url)
    other = Redis.from_url(redis_server.url.rsplit("/", 1)[0] + f"/{db}")
    try:
        await other.delete("where")
        await client.execute_command("SET", "where", f"db{db}")
        assert await other.get("where") == f"db{db}".encode()
        assert await redis_client.get("where") is None  # not db 0
    finally:
        await other.delete("where")
        await other.aclose()
        await client.aclose()


async def test_close_fails_what_is_in_flight_and_refuses_more(
    own_redis_server: RedisServer,
) -> None:
    client = RespClient.from_url(own_redis_server.url)
    assert await client.ping()
    own_redis_server.pause()
    try:
        pending = asyncio.ensure_future(client.execute_command("PING"))
        await asyncio.sleep(0.05)
        start = time.perf_counter()
        await client.aclose()
        with pytest.raises(RespConnectionError):
            await pending
        assert time.perf_counter() - start < 0.5
        with pytest.raises(RespConnectionError):
            await client.ping()
        await client.aclose()  # idempotent
    finally:
        own_redis_server.resume()


async def test_close_while_connecting(own_redis_server: RedisServer) -> None:
    # Paused, the server's kernel still accepts the TCP connection; SELECT hangs.
    client = RespClient.from_url(own_redis_server.url.rsplit("/", 1)[0] + "/1")
    own_redis_server.pause()
    try:
        waiter = asyncio.ensure_future(client.ping())
        await asyncio.sleep(0.1)
        await client.aclose()
        with pytest.raises(RespConnectionError):
            await waiter
        assert not client.connected
    finally:
        own_redis_server.resume()


async def test_client_reconnects_after_a_restart(own_redis_server: RedisServer) -> None:
    client = RespClient.from_url(own_redis_server.url, connect_timeout=1.0)
    try:
        assert await client.ping()
        own_redis_server.stop()
        with pytest.raises(ConnectionError):  # RespConnectionError or refused
            await client.ping()
        with pytest.raises(ConnectionError):
            await client.ping()
        own_redis_server.start()
        assert await client.ping()
        assert client.connections_made == 2
    finally:
        await client.aclose()


# --- AUTH ------------------------------------------------------------------------------------


async def test_auth_with_the_password(password_redis: PasswordRedis) -> None:
    client = RespClient.from_url(password_redis.url(db=2))
    try:
        assert await client.ping()
        await client.execute_command("SET", "k", "v")
        assert await client.execute_command("GET", "k") == b"v"
    finally:
        await client.aclose()


async def test_auth_refused(password_redis: PasswordRedis) -> None:
    wrong = RespClient.from_url(password_redis.url(userinfo=":wrong"))
    none = RespClient.from_url(f"redis://{password_redis.host}:{password_redis.port}/0")
    try:
        with pytest.raises(AuthenticationError, match="WRONGPASS"):
            await wrong.ping()
        assert not wrong.connected  # a failed handshake leaves no connection
        with pytest.raises(AuthenticationError, match="NOAUTH"):
            await none.ping()
    finally:
        await wrong.aclose()
        await none.aclose()


async def test_auth_as_an_acl_user(password_redis: PasswordRedis) -> None:
    admin = RespClient.from_url(password_redis.url())
    alice = RespClient.from_url(password_redis.url(userinfo="alice:alice%20pw"))
    mallory = RespClient.from_url(password_redis.url(userinfo="alice:nope"))
    try:
        reply = await admin.execute_command(
            "ACL", "SETUSER", "alice", "on", ">alice pw", "~pb:*", "+@all"
        )
        assert reply == b"OK"
        assert await alice.execute_command("SET", "pb:x", 1) == b"OK"
        with pytest.raises(ReplyError, match="NOPERM") as denied:  # authorization, not AUTH
            await alice.execute_command("SET", "other", 1)
        assert not isinstance(denied.value, AuthenticationError)
        with pytest.raises(AuthenticationError, match="WRONGPASS"):
            await mallory.ping()
    finally:
        for client in (admin, alice, mallory):
            await client.aclose()


async def test_bucket_with_password_and_db(password_redis: PasswordRedis) -> None:
    limiter = RedisTokenBucket(password_redis.url(db=4), timeout_ms=2000)
    inspect = Redis(host=password_redis.host, port=password_redis.port, password=PASSWORD, db=4)
    try:
        decisions = [await limiter.take("auth", BucketPolicy(3, FROZEN)) for _ in range(4)]
        assert [d.allowed for d in decisions] == [True, True, True, False]
        assert not any(d.degraded for d in decisions)
        assert await inspect.exists(KEY_PREFIX + "auth") == 1
    finally:
        await inspect.aclose()
        await limiter.close()


async def test_bucket_with_a_wrong_password_applies_the_policy(
    password_redis: PasswordRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    limiter = RedisTokenBucket(
        password_redis.url(userinfo=":not-it"),
        timeout_ms=500,
        logger=logging.getLogger(LOGGER_NAME),
    )
    try:
        decision = await limiter.take("auth", BucketPolicy(3, FROZEN))
        assert decision.degraded and decision.allowed
        [warning] = [r for r in caplog.records if r.name == LOGGER_NAME]
        assert "WRONGPASS" in warning.getMessage() and "not-it" not in warning.getMessage()
    finally:
        await limiter.close()


# --- the bucket on this client -----------------------------------------------------------------


@pytest.fixture
async def pool_bucket(redis_client: Redis, redis_server: RedisServer) -> AsyncIterator[Any]:
    made: list[RedisTokenBucket] = []

    def make(url: str | None = None, **kwargs: Any) -> RedisTokenBucket:
        kwargs.setdefault("timeout_ms", 2000)
        kwargs.setdefault("logger", logging.getLogger(LOGGER_NAME))
        limiter = RedisTokenBucket(url or redis_server.url, **kwargs)
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.close()


async def evalsha_calls(redis_client: Redis) -> int:
    stats = await redis_client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_200_concurrent_takes_are_exact_on_a_small_pool(
    pool_bucket: Any, redis_client: Redis
) -> None:
    limiter = pool_bucket()
    assert await limiter.load_script()
    before = await evalsha_calls(redis_client)

    decisions = await asyncio.gather(
        *(limiter.take("exact", BucketPolicy(50, FROZEN)) for _ in range(200))
    )

    assert sum(d.allowed for d in decisions) == 50
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(50))
    assert not any(d.degraded for d in decisions)
    assert await evalsha_calls(redis_client) - before == 200  # one round trip each
    assert 1 <= limiter.client.connections_made <= limiter.client.pool_size


async def test_noscript_after_script_flush_under_concurrency(
    pool_bucket: Any, redis_client: Redis
) -> None:
    limiter = pool_bucket()
    policy = BucketPolicy(30, FROZEN)
    assert (await limiter.take("flush", policy)).remaining == 29
    await redis_client.script_flush()

    decisions = await asyncio.gather(*(limiter.take("flush", policy) for _ in range(100)))

    assert not any(d.degraded for d in decisions)
    assert sum(d.allowed for d in decisions) == 29
    assert await redis_client.script_exists(limiter._sha) == [True]
    assert limiter.available
    assert limiter.client.connections_made <= limiter.client.pool_size


@pytest.mark.parametrize("policy_name", ["allow", "deny"])
async def test_server_killed_mid_flight_fails_fast_then_recovers(
    own_redis_server: RedisServer, caplog: pytest.LogCaptureFixture, policy_name: str
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    limiter = RedisTokenBucket(
        own_redis_server.url,
        timeout_ms=5000,  # far beyond what the test allows: failing fast is the point
        backoff_seconds=0.3,
        failure_policy=policy_name,
        logger=logging.getLogger(LOGGER_NAME),
    )
    policy = BucketPolicy(3, FROZEN)
    try:
        assert not (await limiter.take("kill", policy)).degraded
        own_redis_server.pause()  # the takes below stay in flight...
        takes = [asyncio.ensure_future(limiter.take("kill", policy)) for _ in range(20)]
        await asyncio.sleep(0.1)
        assert not any(t.done() for t in takes)
        killed = time.perf_counter()
        assert own_redis_server._proc is not None
        own_redis_server._proc.kill()  # ...until the server dies under them
        results = await asyncio.gather(*takes, return_exceptions=True)
        assert time.perf_counter() - killed < 1.0
        own_redis_server.stop()  # reap it

        if policy_name == "allow":
            assert all(not isinstance(r, BaseException) and r.degraded for r in results)
        else:
            assert all(isinstance(r, RedisRateLimiterUnavailable) for r in results)
        assert not limiter.available
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1

        own_redis_server.start()  # empty: the script is loaded again on first use
        await asyncio.sleep(0.35)
        after = [await limiter.take("kill", policy) for _ in range(4)]
        assert [d.allowed for d in after] == [True, True, True, False]
        assert not any(d.degraded for d in after)
        assert limiter.available and limiter.client.connected
    finally:
        await limiter.close()


async def test_a_hung_redis_costs_each_take_its_timeout_then_recovers(
    own_redis_server: RedisServer,
) -> None:
    limiter = RedisTokenBucket(
        own_redis_server.url,
        timeout_ms=300,
        backoff_seconds=0.2,
        logger=logging.getLogger(LOGGER_NAME),
    )
    policy = BucketPolicy(3, FROZEN)
    try:
        await limiter.take("timeout", policy)
        own_redis_server.pause()
        start = time.perf_counter()
        first = asyncio.ensure_future(limiter.take("timeout", policy))
        await asyncio.sleep(0.15)
        later = [asyncio.ensure_future(limiter.take("timeout", policy)) for _ in range(10)]
        await first
        first_done = time.perf_counter() - start
        decisions = await asyncio.gather(*later)
        all_done = time.perf_counter() - start
        assert all(d.degraded for d in [first.result(), *decisions])
        assert 0.29 < first_done < 0.4
        assert all_done < 0.15 + 0.3 + 0.1  # none waited longer than its own timeout

        own_redis_server.resume()
        await asyncio.sleep(0.25)
        assert not (await limiter.take("timeout", policy)).degraded
    finally:
        own_redis_server.resume()
        await limiter.close()


async def open_second_connection(client: RespClient) -> None:
    """With one connection open: two commands a turn of the loop apart (within one turn
    they would share the first's write), the second finds the first's connection busy
    and opens another (in the background)."""
    first = client.execute_command("PING")
    await asyncio.sleep(0)  # the first is written
    second = client.execute_command("PING")
    assert await first == await second == b"PONG"
    for _ in range(100):
        if client.connections == 2:
            break
        await asyncio.sleep(0.01)
    assert client.connections == 2


async def test_commands_of_one_turn_share_one_connection_and_one_write(
    redis_server: RedisServer,
) -> None:
    """Fifty commands sent in one turn of the loop go out in one write on one connection
    (the pool does not grow for them), and each gets its own reply, in order."""
    client = RespClient.from_url(redis_server.url, pool_size=4)
    try:
        assert await client.execute_command("PING") == b"PONG"
        replies = await asyncio.gather(
            *(client.execute_command("INCR", "one-turn") for _ in range(50))
        )
        assert replies == list(range(1, 51))
        await asyncio.sleep(0.05)  # a connection the pool had started would be open now
        assert client.connections == 1
    finally:
        await client.aclose()


async def test_one_wedged_connection_holds_up_nothing_after_it(
    redis_server: RedisServer, redis_client: Redis
) -> None:
    """A connection stuck on a command (here a BLPOP that waits for ever) takes no new
    commands while another is idle, and is dropped once it has been stuck longer than
    the timeout: the takes go on, one round trip each, on the pool's other connection."""
    limiter = RedisTokenBucket(redis_server.url, timeout_ms=300, pool_size=2)
    client = limiter.client
    policy = BucketPolicy(1000, FROZEN)
    try:
        await limiter.take("wedge", policy)
        await open_second_connection(client)

        stuck = asyncio.ensure_future(client.execute_command("BLPOP", "never", 0))
        await asyncio.sleep(0.05)
        decisions = await asyncio.gather(*(limiter.take("wedge", policy) for _ in range(50)))
        # Behind the BLPOP they would have timed out, and been decided without Redis.
        assert not any(d.degraded for d in decisions) and not stuck.done()

        await asyncio.sleep(0.35)  # the BLPOP's connection is stalled now
        after = await limiter.take("wedge", policy)
        assert not after.degraded and after.remaining == 1000 - 52
        with pytest.raises(RespConnectionError, match=r"no reply from Redis within [0-9.]+ s"):
            await stuck
        assert client.connections_dropped_stalled == 1
    finally:
        await limiter.close()


async def test_when_every_connection_is_slow_commands_go_to_the_one_that_answered_last(
    redis_server: RedisServer,
) -> None:
    """A loop busy elsewhere makes every busy connection look slow; even then a command
    goes to the connection that answered last, not to the one wedged on a BLPOP because
    it has fewer commands queued."""
    client = RespClient.from_url(redis_server.url, pool_size=2)
    try:
        assert await client.execute_command("PING") == b"PONG"
        await open_second_connection(client)
        stuck = asyncio.ensure_future(client.execute_command("BLPOP", "never", 0))
        await asyncio.sleep(0.05)
        queued = [client.execute_command("PING") for _ in range(5)]
        time.sleep(0.05)  # the loop is held: both connections are past SLOW_AFTER now
        late = client.execute_command("PING")
        async with asyncio.timeout(2):
            assert await asyncio.gather(*queued, late) == [b"PONG"] * 6
        assert not stuck.done()
    finally:
        await client.aclose()
    with pytest.raises(RespConnectionError, match="closed"):
        await stuck


async def test_a_command_nobody_awaits_fails_quietly_when_the_client_closes(
    redis_server: RedisServer,
) -> None:
    """A command in flight that no caller awaits any more fails with the client's close,
    and asyncio does not report it as an exception never retrieved (such a report would
    land, at some later garbage collection, in an unrelated place)."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        client = RespClient.from_url(redis_server.url)
        assert await client.execute_command("PING") == b"PONG"
        client.execute_command("BLPOP", "never", 0)  # fire and forget
        await asyncio.sleep(0.05)
        await client.aclose()
        await asyncio.sleep(0)
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert not [c for c in reported if "never retrieved" in c.get("message", "")], reported


def test_bucket_works_on_uvloop(redis_server: RedisServer) -> None:
    """`serve` runs on uvloop, whose transports are not asyncio's own classes."""
    import uvloop

    async def takes() -> list:
        bucket = RedisTokenBucket(f"redis://127.0.0.1:{redis_server.port}/0", timeout_ms=1000)
        try:
            return [await bucket.take("uvloop", BucketPolicy(3, 0.001)) for _ in range(4)]
        finally:
            await bucket.close()

    decisions = uvloop.run(takes())
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert not any(d.degraded for d in decisions)
    assert [d.remaining for d in decisions[:3]] == [2, 1, 0]
