"""The rate limiter's asyncio Redis client: RESP2, pipelined, over TCP, TLS or a unix socket.

redis-py's asyncio client spends tens of microseconds of CPU per command (connection pool,
locks, per-command retry and callback machinery); the rate limiter sends one small
``EVALSHA`` per request and needs none of that. :class:`RespClient` talks to ONE Redis
server over a small pool of persistent connections (``pool_size``, opened lazily: the
first command opens one, after AUTH and SELECT if the URL asks for them, and more open in
the background while every open one has commands in flight). Every command is written at
once to the least busy connection (pipelining: its reply is the next one that connection
gets back) and an incremental parser hands replies to the waiting futures in FIFO order.
Concurrent commands need no lock. :class:`~.resp_cluster.ClusterClient` puts one
RespClient per node behind Redis Cluster's slot map.

* Replies: integers are ``int``, bulk and simple strings ``bytes``, arrays ``list``, nil
  ``None``; an error reply raises :class:`ReplyError` (``NOSCRIPT`` as
  :class:`NoScriptError`, authentication failures as :class:`AuthenticationError`,
  ``MOVED``/``ASK``/``CLUSTERDOWN``/``TRYAGAIN`` as :class:`ClusterError`); error replies
  nested inside an array are returned as :class:`ReplyError` values. Arrays nest at most
  :data:`~.resp_protocol.MAX_DEPTH` deep: deeper is a protocol error.
* Failures: when a connection fails (refused, reset, closed by the server, a protocol
  error) every command in flight ON IT fails at once with :class:`RespConnectionError` (a
  ``ConnectionError``); the pool's other connections carry on, and the next command
  connects again if none is left. :meth:`RespClient.disconnect` drops them all.
* Timeouts: ``connect_timeout`` bounds connecting (TCP, TLS, AUTH and SELECT). Commands
  have no timeout of their own: wrap them in ``asyncio.timeout``. A command cancelled while
  waiting leaves its connection usable (its reply is dropped when it comes). A busy
  connection that has not answered for :data:`SLOW_AFTER` gets no new commands while
  another one answers (and when all are that slow, the one that answered last gets them).
  With
  ``command_timeout`` set, a connection that has had commands in flight and no reply for
  longer than that is stalled: the next command to pick a connection drops it (what was in
  flight on it fails) and goes to another one, so one wedged connection never holds up
  the requests that come after it.
* URLs (:func:`parse_url`): ``redis://``, ``rediss://`` (TLS), ``unix://``, and
  ``redis+cluster://`` / ``rediss+cluster://`` for Redis Cluster.

Not thread-safe; one event loop per client. No RESP3, no pub/sub, no MULTI across awaits.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections import deque
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = [
    "DEFAULT_POOL_SIZE",
    "INCOMPLETE",
    "MAX_DEPTH",
    "AuthenticationError",
    "ClusterError",
    "ConnectionParams",
    "NoScriptError",
    "ReplyError",
    "RespClient",
    "RespConnectionError",
    "RespError",
    "RespParser",
    "RespProtocolError",
    "pack_args",
    "pack_command",
    "parse_url",
]

from .resp_protocol import (
    DEFAULT_PORT,
    INCOMPLETE,
    MAX_DEPTH,
    AuthenticationError,
    ClusterError,
    NoScriptError,
    ReplyError,
    RespConnectionError,
    RespError,
    RespParser,
    RespProtocolError,
    pack_args,
    pack_command,
)

DEFAULT_POOL_SIZE = 4
SLOW_AFTER = 0.005
"""Seconds without a reply after which a busy connection gets new commands only when every
other one is as slow: a command stuck on one connection does not hold up the next ones."""

# --- URLs ----------------------------------------------------------------------------------

SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
_TLS_OPTIONS = (
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_cert_reqs",
    "ssl_check_hostname",
)
_CERT_REQS = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class TLSOptions:
    """What a ``rediss://`` URL says about TLS (redis-py's query option names)."""

    ca_certs: str | None = None  # PEM file of the CAs to trust; default: the system's
    certfile: str | None = None  # a client certificate (Redis' --tls-auth-clients yes)
    keyfile: str | None = None
    cert_reqs: str = "required"  # none | optional | required
    check_hostname: bool = True

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_certs)
        if self.certfile:
            context.load_cert_chain(self.certfile, self.keyfile)
        if self.cert_reqs == "none":
            context.check_hostname = False
        else:
            context.check_hostname = self.check_hostname
        context.verify_mode = _CERT_REQS[self.cert_reqs]
        return context


@dataclass(frozen=True)
class ConnectionParams:
    host: str = "localhost"
    port: int = DEFAULT_PORT
    db: int = 0
    username: str | None = None
    password: str | None = None
    path: str | None = None  # unix://: the socket's path (host and port unused)
    tls: TLSOptions | None = None  # rediss://
    cluster: bool = False  # redis+cluster:// or rediss+cluster://
    seeds: tuple[tuple[str, int], ...] = field(default=())  # cluster: host:port to ask first


def _flag(name: str, text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise ValueError(f"invalid {name} in the Redis URL: {text!r} (true or false)")


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid addr in the Redis URL: {text!r} (host:port)")
    return host.strip("[]"), int(port)


def parse_url(url: str) -> ConnectionParams:
    """A Redis URL -> ConnectionParams; ``ValueError`` when it is not one this client takes.

    * ``redis://[[username]:password@]host[:port][/db][?db=N]``
    * ``rediss://...`` the same over TLS; options ``ssl_ca_certs`` (a PEM file),
      ``ssl_certfile`` and ``ssl_keyfile`` (a client certificate), ``ssl_cert_reqs``
      (``none``, ``optional``, ``required``: the default) and ``ssl_check_hostname``
      (``true``: the default, or ``false``)
    * ``unix://[[username]:password@]/path/to/redis.sock[?db=N]``
    * ``redis+cluster://[[username]:password@]host[:port][?addr=host:port...]`` and
      ``rediss+cluster://`` (with the TLS options): Redis Cluster; the host and each
      ``addr`` are seed nodes, asked in turn for the slot map; the database is 0.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(
            f"a Redis URL starts with {', '.join(s + '://' for s in SCHEMES)}, "
            f"not {parts.scheme or '(no scheme)'}:"
        )
    cluster = scheme.endswith("+cluster")
    tls = scheme.startswith("rediss")
    query = parse_qs(parts.query, keep_blank_values=True)
    allowed = {"db"} | (set(_TLS_OPTIONS) if tls else set()) | ({"addr"} if cluster else set())
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise ValueError(f"unsupported Redis URL options for {scheme}://: {', '.join(unknown)}")
    single = {name: values[-1] for name, values in query.items()}
    try:
        port = parts.port  # ValueError when it is not a number in range
    except ValueError as exc:
        raise ValueError(f"invalid port in the Redis URL: {exc}") from None
    path = None
    if scheme == "unix":
        path = unquote(parts.path)
        if not path:
            raise ValueError("a unix:// Redis URL needs the socket's path: unix:///path/redis.sock")
        db_text = single.get("db", "")
    else:
        db_text = single["db"] if "db" in single else unquote(parts.path).strip("/")
    try:
        db = int(db_text) if db_text else 0
    except ValueError:
        raise ValueError(f"invalid database number in the Redis URL: {db_text!r}") from None
    if db < 0:
        raise ValueError(f"invalid database number in the Redis URL: {db}")
    if cluster and db:
        raise ValueError("Redis Cluster has database 0 only: no /db in a cluster URL")
    options = None
    if tls:
        reqs = single.get("ssl_cert_reqs", "required").lower()
        if reqs not in _CERT_REQS:
            raise ValueError(f"invalid ssl_cert_reqs in the Redis URL: {reqs!r}")
        options = TLSOptions(
            ca_certs=single.get("ssl_ca_certs") or None,
            certfile=single.get("ssl_certfile") or None,
            keyfile=single.get("ssl_keyfile") or None,
            cert_reqs=reqs,
            check_hostname=_flag("ssl_check_hostname", single.get("ssl_check_hostname", "true")),
        )
    host = unquote(parts.hostname) if parts.hostname else "localhost"
    port = port or DEFAULT_PORT
    seeds: tuple[tuple[str, int], ...] = ()
    if cluster:
        seeds = ((host, port), *(_address(a) for a in query.get("addr", [])))
    return ConnectionParams(
        host=host,
        port=port,
        db=db,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        path=path,
        tls=options,
        cluster=cluster,
        seeds=seeds,
    )


# --- the connection ------------------------------------------------------------------------


class _Connection(asyncio.Protocol):
    """One connection: commands written as they come, replies matched in FIFO order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = RespParser()
        self.pending: deque[asyncio.Future[Any]] = deque()
        self.busy_since = 0.0  # loop time of the last reply, or of a send to an idle one
        self._lost: asyncio.Future[None] = loop.create_future()
        self.closed = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check.
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family != socket.AF_UNIX:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def data_received(self, data: bytes) -> None:
        try:
            replies = self._parser.replies(data)
        except RespProtocolError as exc:
            self.abort(exc)
            return
        pending = self.pending
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
        if replies:
            self.busy_since = self._loop.time()

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
        if not self.pending:
            self.busy_since = self._loop.time()
        self.pending.append(future)
        self._transport.write(data)
        return future

    def send_many(self, commands: Sequence[bytes]) -> list[asyncio.Future[Any]]:
        """Several packed commands in one write, in order (e.g. ASKING and the command)."""
        if self.closed or self._transport is None:
            raise RespConnectionError("the connection to Redis is closed")
        futures = [self._loop.create_future() for _ in commands]
        if not self.pending:
            self.busy_since = self._loop.time()
        self.pending.extend(futures)
        self._transport.write(b"".join(commands))
        return futures

    def stalled(self, now: float, timeout: float) -> bool:
        """Commands in flight and no reply for longer than ``timeout`` seconds."""
        return bool(self.pending) and now - self.busy_since > timeout

    def abort(self, reason: BaseException | None = None) -> None:
        """Drop the connection now; every command in flight on it fails."""
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
        pending, self.pending = self.pending, deque()
        for future in pending:
            if not future.done():
                error = RespConnectionError(f"{message}: {cause}" if cause else message)
                error.__cause__ = cause
                future.set_exception(error)
                # A command whose caller no longer waits (a fire-and-forget one, or one
                # abandoned by a failed caller) is not reported as "never retrieved" when
                # collected; one that is awaited still raises the error.
                future.exception()


# --- the client ----------------------------------------------------------------------------


class RespClient:
    """A Redis client over a small pool of lazily opened, pipelined connections.

    One server: TCP (``host``, ``port``), TLS (``ssl`` a context; ``server_hostname`` to
    check, by default ``host``) or a unix socket (``path``). See the module doc.
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int = DEFAULT_PORT,
        *,
        path: str | None = None,
        ssl: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        connect_timeout: float | None = None,
        command_timeout: float | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> None:
        if connect_timeout is not None and connect_timeout <= 0:
            raise ValueError("connect_timeout must be positive")
        if command_timeout is not None and command_timeout <= 0:
            raise ValueError("command_timeout must be positive")
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self.host = host
        self.port = port
        self.path = path
        self.ssl = ssl
        self.server_hostname = server_hostname
        self.db = db
        self.username = username
        self._password = password
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.pool_size = pool_size
        self._conns: list[_Connection] = []
        self._connecting: asyncio.Task[_Connection] | None = None
        self._closed = False
        self.connections_made = 0  # connections opened so far (and handshaken)
        self.connections_dropped_stalled = 0  # dropped for no reply within command_timeout
        self._evalsha_key: tuple[str, int, int] | None = None
        self._evalsha_header = b""

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        connect_timeout: float | None = None,
        command_timeout: float | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> RespClient:
        """A client for a ``redis://``, ``rediss://`` or ``unix://`` URL (:func:`parse_url`).

        A cluster URL is a ``ValueError`` here: :func:`.resp_cluster.client_from_url`.
        """
        params = parse_url(url)
        if params.cluster:
            raise ValueError("a redis+cluster:// URL needs resp_cluster.ClusterClient")
        return cls.from_params(
            params,
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
            pool_size=pool_size,
        )

    @classmethod
    def from_params(cls, params: ConnectionParams, **options: Any) -> RespClient:
        return cls(
            params.host,
            params.port,
            path=params.path,
            ssl=params.tls.context() if params.tls is not None else None,
            db=params.db,
            username=params.username,
            password=params.password,
            **options,
        )

    def __repr__(self) -> str:  # never the password
        if self.path is not None:
            return f"<RespClient unix://{self.path}?db={self.db}>"
        scheme = "rediss" if self.ssl is not None else "redis"
        return f"<RespClient {scheme}://{self.host}:{self.port}/{self.db}>"

    @property
    def connected(self) -> bool:
        return any(not conn.closed for conn in self._conns)

    @property
    def connections(self) -> int:
        """Connections open now."""
        return sum(not conn.closed for conn in self._conns)

    @property
    def closed(self) -> bool:
        return self._closed

    # commands

    def execute_command(self, *args: Any) -> Awaitable[Any]:
        """Send one command; await the result for its reply.

        Connected, the command is written before this returns (so commands issued in a
        row are sent in that order, on one connection while it is the least busy) and the
        awaitable is the reply's future itself.
        """
        return self.send_packed(pack_command(*args))

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Awaitable[Any]:
        """``EVALSHA sha numkeys key... arg...``; the constant head is packed once."""
        return self.send_packed(self.pack_evalsha(sha, numkeys, keys_and_args))

    def pack_evalsha(self, sha: str, numkeys: int, keys_and_args: tuple[Any, ...]) -> bytes:
        key = (sha, numkeys, len(keys_and_args))
        if key != self._evalsha_key:
            head = pack_command("EVALSHA", sha, numkeys)
            self._evalsha_header = b"*%d%s" % (3 + len(keys_and_args), head[2:])
            self._evalsha_key = key
        return self._evalsha_header + pack_args(keys_and_args)

    def send_packed(self, data: bytes) -> Awaitable[Any]:
        """Send one command already packed (:func:`pack_command`); every command goes here."""
        conns = self._conns
        if len(conns) == 1:  # the usual case: one connection, idle or nearly
            only = conns[0]
            if not only.closed and not only.pending:
                return only.send(data)
        conn = self._pick()
        if conn is not None:
            return conn.send(data)
        return self._connect_and_send(data)

    async def send_many(self, commands: Sequence[bytes]) -> list[Any]:
        """Packed commands written together on one connection; their replies, or errors
        as :class:`ReplyError` values (a failed connection raises)."""
        conn = self._pick() or await self._connection()
        futures = conn.send_many(commands)
        return await asyncio.gather(*futures, return_exceptions=True)

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

    # the pool

    def _pick(self) -> _Connection | None:
        """The connection for the next command (None: none open).

        An idle one if any; else the least busy of those that answered lately (within
        :data:`SLOW_AFTER`), else the least busy of all. Drops stalled connections, and
        starts opening another in the background while all open ones are busy.
        """
        best: _Connection | None = None
        best_rank: tuple[bool, float] = (True, 0.0)
        timeout = self.command_timeout
        now = asyncio.get_running_loop().time()
        pruned = False
        for conn in self._conns:
            if conn.closed:
                pruned = True
                continue
            if timeout is not None and conn.stalled(now, timeout):
                self.connections_dropped_stalled += 1
                conn.abort(RespConnectionError(f"no reply from Redis within {timeout:g} s"))
                pruned = True
                continue
            if not conn.pending:
                best = conn
                break
            # Among those that answered lately the least busy; among the slow ones the one
            # that answered last (a wedged connection has been silent longest).
            slow = now - conn.busy_since > SLOW_AFTER
            rank = (slow, -conn.busy_since if slow else len(conn.pending))
            if best is None or rank < best_rank:
                best, best_rank = conn, rank
        if pruned:
            self._conns = [conn for conn in self._conns if not conn.closed]
        if (
            best is not None
            and best.pending
            and len(self._conns) < self.pool_size
            and self._connecting is None
            and not self._closed
        ):
            self._start_connect()  # for the next commands; this one goes to ``best``
        return best

    async def _connection(self) -> _Connection:
        if self._closed:
            raise RespConnectionError("the Redis client is closed")
        conn = self._pick()
        if conn is not None:
            return conn
        task = self._connecting or self._start_connect()
        # Shielded: a caller that gives up (timeout) does not cancel the others' connect.
        return await asyncio.shield(task)

    def _start_connect(self) -> asyncio.Task[_Connection]:
        task = asyncio.get_running_loop().create_task(self._connect())
        task.add_done_callback(self._connect_done)
        self._connecting = task
        return task

    def _connect_done(self, task: asyncio.Task[_Connection]) -> None:
        if self._connecting is task:
            self._connecting = None
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have given up already

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        if self.path is not None:
            _, conn = await loop.create_unix_connection(lambda: _Connection(loop), self.path)
        elif self.ssl is not None:
            _, conn = await loop.create_connection(
                lambda: _Connection(loop),
                self.host,
                self.port,
                ssl=self.ssl,
                server_hostname=self.server_hostname or self.host,
            )
        else:
            _, conn = await loop.create_connection(lambda: _Connection(loop), self.host, self.port)
        return conn

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        conn: _Connection | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                conn = await self._open(loop)
                handshake = []
                if self._password is not None:
                    auth = (self.username, self._password) if self.username else (self._password,)
                    handshake.append(pack_command("AUTH", *auth))
                if self.db:
                    handshake.append(pack_command("SELECT", self.db))
                if handshake:  # pipelined: one round trip
                    futures = conn.send_many(handshake)
                    for result in await asyncio.gather(*futures, return_exceptions=True):
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
        self._conns.append(conn)
        self.connections_made += 1
        return conn

    def disconnect(self) -> None:
        """Drop every connection now (commands in flight fail); the next command reconnects."""
        conns, self._conns = self._conns, []
        for conn in conns:
            conn.abort(RespConnectionError("dropped by the client"))

    async def aclose(self) -> None:
        """Close the connections and refuse further commands; idempotent."""
        self._closed = True
        task, self._connecting = self._connecting, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=1.0)
        conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await conn.wait_closed()
