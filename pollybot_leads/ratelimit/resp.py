"""A lean asyncio Redis client for the rate limiter's hot path: RESP2 over one connection.

redis-py's asyncio client spends tens of microseconds of CPU per command (connection pool,
locks, per-command retry and callback machinery); the rate limiter sends one small
``EVALSHA`` per request and needs none of that. :class:`RespClient` keeps ONE persistent
TCP connection (opened lazily by the first command, after AUTH and SELECT if the URL asks
for them) and pipelines every command on it: a command is written at once, its reply is the
next one the server sends back, and an incremental parser hands the replies to the waiting
futures in FIFO order. Concurrent commands need no pool and no lock.

* Replies: integers are ``int``, bulk and simple strings ``bytes``, arrays ``list``, nil
  ``None``; an error reply raises :class:`ReplyError` (``NOSCRIPT`` as
  :class:`NoScriptError`, authentication failures as :class:`AuthenticationError`); error
  replies nested inside an array are returned as :class:`ReplyError` values.
* Failures: when the connection fails (refused, reset, closed by the server, a protocol
  error) every command in flight fails at once with :class:`RespConnectionError` (a
  ``ConnectionError``) and the next command connects again. :meth:`RespClient.disconnect`
  does the same on purpose, e.g. after a timeout: the connection may be wedged.
* Timeouts: ``connect_timeout`` bounds connecting (TCP, AUTH and SELECT). Commands have no
  timeout of their own: wrap them in ``asyncio.timeout``. A command cancelled while waiting
  leaves the connection usable (its reply is read and dropped when it comes).
* URLs (:func:`parse_url`): ``redis://[[username]:password@]host[:port][/db][?db=N]``.
  Anything else (``rediss://``, ``unix://``, other query options) raises
  :class:`UnsupportedURL`: no TLS here; the rate limiter hands such URLs to redis-py.

Not thread-safe; one event loop per client. No RESP3, no pub/sub, no MULTI across awaits.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = [
    "INCOMPLETE",
    "AuthenticationError",
    "ConnectionParams",
    "NoScriptError",
    "ReplyError",
    "RespClient",
    "RespConnectionError",
    "RespError",
    "RespParser",
    "RespProtocolError",
    "UnsupportedURL",
    "pack_args",
    "pack_command",
    "parse_url",
]

from .resp_protocol import (
    DEFAULT_PORT,
    INCOMPLETE,
    AuthenticationError,
    NoScriptError,
    ReplyError,
    RespConnectionError,
    RespError,
    RespParser,
    RespProtocolError,
    UnsupportedURL,
    pack_args,
    pack_command,
)

# --- URLs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectionParams:
    host: str = "localhost"
    port: int = DEFAULT_PORT
    db: int = 0
    username: str | None = None
    password: str | None = None


def parse_url(url: str) -> ConnectionParams:
    """``redis://[[username]:password@]host[:port][/db][?db=N]`` -> ConnectionParams.

    Raises :class:`UnsupportedURL` for other schemes (``rediss://``, ``unix://``) and query
    options other than ``db``, ``ValueError`` for a malformed port or database number.
    """
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise UnsupportedURL(f"only redis:// URLs are handled here, not {parts.scheme}://")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - {"db"})
    if unknown:
        raise UnsupportedURL(f"unsupported Redis URL options: {', '.join(unknown)}")
    try:
        port = parts.port  # ValueError when it is not a number in range
    except ValueError as exc:
        raise ValueError(f"invalid port in the Redis URL: {exc}") from None
    db_text = query["db"][0] if "db" in query else unquote(parts.path).strip("/")
    try:
        db = int(db_text) if db_text else 0
    except ValueError:
        raise ValueError(f"invalid database number in the Redis URL: {db_text!r}") from None
    if db < 0:
        raise ValueError(f"invalid database number in the Redis URL: {db}")
    return ConnectionParams(
        host=unquote(parts.hostname) if parts.hostname else "localhost",
        port=port or DEFAULT_PORT,
        db=db,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


# --- the connection ------------------------------------------------------------------------


class _Connection(asyncio.Protocol):
    """One TCP connection: commands written as they come, replies matched in FIFO order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = RespParser()
        self._pending: deque[asyncio.Future[Any]] = deque()
        self._lost: asyncio.Future[None] = loop.create_future()
        self.closed = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check.
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def data_received(self, data: bytes) -> None:
        try:
            replies = self._parser.replies(data)
        except RespProtocolError as exc:
            self.abort(exc)
            return
        pending = self._pending
        for reply in replies:
            if not pending:
                self.abort(RespProtocolError("a reply nobody asked for"))
                return
            future = pending.popleft()
            if future.done():  # cancelled while waiting: the reply is dropped
                continue
            if isinstance(reply, ReplyError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail_pending("the connection to Redis was lost", exc)
        if not self._lost.done():
            self._lost.set_result(None)

    # ours

    def send(self, data: bytes) -> asyncio.Future[Any]:
        """Write one packed command; the future gets its reply (or its error)."""
        if self.closed or self._transport is None:
            raise RespConnectionError("the connection to Redis is closed")
        future = self._loop.create_future()
        self._pending.append(future)
        self._transport.write(data)
        return future

    def abort(self, reason: BaseException | None = None) -> None:
        """Drop the connection now; every command in flight fails."""
        if not self.closed:
            self.closed = True
            self._fail_pending("the connection to Redis was dropped", reason)
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        """Close the connection (commands in flight fail)."""
        if not self.closed:
            self.closed = True
            self._fail_pending("the Redis client was closed", None)
        if self._transport is not None:
            self._transport.close()

    async def wait_closed(self) -> None:
        await self._lost

    def _fail_pending(self, message: str, cause: BaseException | None) -> None:
        pending, self._pending = self._pending, deque()
        for future in pending:
            if not future.done():
                error = RespConnectionError(f"{message}: {cause}" if cause else message)
                error.__cause__ = cause
                future.set_exception(error)


# --- the client ----------------------------------------------------------------------------


class RespClient:
    """A Redis client over ONE lazily opened, pipelined connection; see the module doc."""

    def __init__(
        self,
        host: str = "localhost",
        port: int = DEFAULT_PORT,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        connect_timeout: float | None = None,
    ) -> None:
        if connect_timeout is not None and connect_timeout <= 0:
            raise ValueError("connect_timeout must be positive")
        self.host = host
        self.port = port
        self.db = db
        self.username = username
        self._password = password
        self.connect_timeout = connect_timeout
        self._conn: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None
        self._closed = False
        self.connections_made = 0  # connections opened so far (and handshaken)
        self._evalsha_key: tuple[str, int, int] | None = None
        self._evalsha_header = b""

    @classmethod
    def from_url(cls, url: str, *, connect_timeout: float | None = None) -> RespClient:
        """A client for ``redis://...`` (see :func:`parse_url`)."""
        params = parse_url(url)
        return cls(
            params.host,
            params.port,
            db=params.db,
            username=params.username,
            password=params.password,
            connect_timeout=connect_timeout,
        )

    def __repr__(self) -> str:  # never the password
        return f"<RespClient redis://{self.host}:{self.port}/{self.db}>"

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    @property
    def closed(self) -> bool:
        return self._closed

    # commands

    def execute_command(self, *args: Any) -> Awaitable[Any]:
        """Send one command; await the result for its reply.

        Connected, the command is written before this returns (so commands issued in a
        row are sent in that order) and the awaitable is the reply's future itself.
        """
        return self.send_packed(pack_command(*args))

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Awaitable[Any]:
        """``EVALSHA sha numkeys key... arg...``; the constant head is packed once."""
        key = (sha, numkeys, len(keys_and_args))
        if key != self._evalsha_key:
            head = pack_command("EVALSHA", sha, numkeys)
            self._evalsha_header = b"*%d%s" % (3 + len(keys_and_args), head[2:])
            self._evalsha_key = key
        return self.send_packed(self._evalsha_header + pack_args(keys_and_args))

    def send_packed(self, data: bytes) -> Awaitable[Any]:
        """Send one command already packed (:func:`pack_command`); every command goes here."""
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn.send(data)
        return self._connect_and_send(data)

    async def _connect_and_send(self, data: bytes) -> Any:
        conn = await self._connection()
        return await conn.send(data)

    async def script_load(self, script: str) -> str:
        """Load ``script``; its SHA1 as text."""
        sha = await self.execute_command("SCRIPT", "LOAD", script)
        return sha.decode() if isinstance(sha, bytes) else str(sha)

    async def ping(self) -> bool:
        reply = await self.execute_command("PING")
        return bool(reply == b"PONG")

    # the connection

    async def _connection(self) -> _Connection:
        if self._closed:
            raise RespConnectionError("the Redis client is closed")
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        task = self._connecting
        if task is None:
            task = asyncio.get_running_loop().create_task(self._connect())
            task.add_done_callback(self._connect_done)
            self._connecting = task
        # Shielded: a caller that gives up (timeout) does not cancel the others' connect.
        return await asyncio.shield(task)

    def _connect_done(self, task: asyncio.Task[_Connection]) -> None:
        if self._connecting is task:
            self._connecting = None
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have given up already

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        conn: _Connection | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop), self.host, self.port
                )
                handshake = []
                if self._password is not None:
                    auth = (self.username, self._password) if self.username else (self._password,)
                    handshake.append(conn.send(pack_command("AUTH", *auth)))
                if self.db:
                    handshake.append(conn.send(pack_command("SELECT", self.db)))
                if handshake:  # pipelined: one round trip
                    for result in await asyncio.gather(*handshake, return_exceptions=True):
                        if isinstance(result, BaseException):
                            raise result
        except BaseException as exc:
            if conn is not None:
                conn.abort()
            if self._closed and isinstance(exc, asyncio.CancelledError):
                # aclose() cancelled us: the waiters get a plain error, not a cancellation.
                raise RespConnectionError("the Redis client is closed") from None
            raise
        if self._closed:
            conn.abort()
            raise RespConnectionError("the Redis client is closed")
        self._conn = conn
        self.connections_made += 1
        return conn

    def disconnect(self) -> None:
        """Drop the connection now (commands in flight fail); the next command reconnects."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort(RespConnectionError("dropped by the client"))

    async def aclose(self) -> None:
        """Close the connection and refuse further commands; idempotent."""
        self._closed = True
        task, self._connecting = self._connecting, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=1.0)
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await conn.wait_closed()
