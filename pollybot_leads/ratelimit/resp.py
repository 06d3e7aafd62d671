"""The rate limiter's asyncio Redis client: RESP2, pipelined, over TCP, TLS or a unix socket.

redis-py's asyncio client spends tens of microseconds of CPU per command (connection pool,
locks, per-command retry and callback machinery); the rate limiter sends one small
``EVALSHA`` per request and needs none of that. :class:`RespClient` talks to ONE Redis
server over a small pool of persistent connections (``pool_size``, opened lazily: the
first command opens one, after AUTH and SELECT if the URL asks for them, and more open in
the background while every open one has commands in flight). Every command is written at
once to the least busy connection (pipelining, :mod:`.resp_connection`: its reply is the
next one that connection gets back). Concurrent commands need no lock.
:class:`~.resp_cluster.ClusterClient` puts one RespClient per node behind Redis Cluster's
slot map; :func:`~.resp_url.parse_url` reads the URLs; :mod:`.resp_protocol` holds the
wire format and the errors.

* Replies: integers are ``int``, bulk and simple strings ``bytes``, arrays ``list``, nil
  ``None``; an error reply raises :class:`~.resp_protocol.ReplyError` (``NOSCRIPT`` as
  ``NoScriptError``, authentication failures as ``AuthenticationError``,
  ``MOVED``/``ASK``/``CLUSTERDOWN``/``TRYAGAIN`` as ``ClusterError``); error replies
  nested inside an array are returned as ``ReplyError`` values. Arrays nest at most
  :data:`~.resp_protocol.MAX_DEPTH` deep: deeper is a protocol error.
* Failures: when a connection fails (refused, reset, closed by the server, a protocol
  error) every command in flight ON IT fails at once with
  :class:`~.resp_protocol.RespConnectionError` (a ``ConnectionError``); the pool's other
  connections carry on, and the next command connects again if none is left.
  :meth:`RespClient.disconnect` drops them all.
* Timeouts: ``connect_timeout`` bounds connecting (TCP, TLS, AUTH and SELECT). Commands
  have no timeout of their own: wrap them in ``asyncio.timeout``. A command cancelled while
  waiting leaves its connection usable (its reply is dropped when it comes). A busy
  connection that has not answered for :data:`SLOW_AFTER` gets no new commands while
  another one answers (and when all are that slow, the one that answered last gets them).
  With ``command_timeout`` set, a connection that has had commands in flight and no reply
  for longer than that is stalled: the next command to pick a connection drops it (what
  was in flight on it fails) and goes to another one, so one wedged connection never holds
  up the requests that come after it.

Not thread-safe; one event loop per client. No RESP3, no pub/sub, no MULTI across awaits.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Sequence
from typing import Any

from .resp_connection import Connection
from .resp_protocol import DEFAULT_PORT, RespConnectionError, pack_args, pack_command
from .resp_url import ConnectionParams, parse_url

__all__ = ["DEFAULT_POOL_SIZE", "SLOW_AFTER", "RespClient"]

DEFAULT_POOL_SIZE = 4
SLOW_AFTER = 0.005
"""Seconds without a reply after which a busy connection gets new commands only when every
other one is as slow: a command stuck on one connection does not hold up the next ones."""


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
        self._conns: list[Connection] = []
        self._connecting: asyncio.Task[Connection] | None = None
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
        for gathering in conns:  # one write for this turn's commands (resp_connection.py)
            if gathering.gathering and not gathering.closed:
                return gathering.send(data)
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

    def _pick(self) -> Connection | None:
        """The connection for the next command (None: none open).

        An idle one if any; else the least busy of those that answered lately (within
        :data:`SLOW_AFTER`), else the least busy of all. Drops stalled connections, and
        starts opening another in the background while all open ones are busy.
        """
        best: Connection | None = None
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

    async def _connection(self) -> Connection:
        if self._closed:
            raise RespConnectionError("the Redis client is closed")
        conn = self._pick()
        if conn is not None:
            return conn
        task = self._connecting or self._start_connect()
        # Shielded: a caller that gives up (timeout) does not cancel the others' connect.
        return await asyncio.shield(task)

    def _start_connect(self) -> asyncio.Task[Connection]:
        task = asyncio.get_running_loop().create_task(self._connect())
        task.add_done_callback(self._connect_done)
        self._connecting = task
        return task

    def _connect_done(self, task: asyncio.Task[Connection]) -> None:
        if self._connecting is task:
            self._connecting = None
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have given up already

    async def _open(self, loop: asyncio.AbstractEventLoop) -> Connection:
        if self.path is not None:
            _, conn = await loop.create_unix_connection(lambda: Connection(loop), self.path)
        elif self.ssl is not None:
            _, conn = await loop.create_connection(
                lambda: Connection(loop),
                self.host,
                self.port,
                ssl=self.ssl,
                server_hostname=self.server_hostname or self.host,
            )
        else:
            _, conn = await loop.create_connection(lambda: Connection(loop), self.host, self.port)
        return conn

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        conn: Connection | None = None
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
