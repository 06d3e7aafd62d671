"""One pipelined RESP2 connection to Redis, as an asyncio protocol.

Commands sent in one turn of the event loop are written together at its end (one
system call for all of them: the requests a turn runs each send one, and their
replies come back in one read); each command's future waits in a FIFO queue; the
incremental parser (:class:`~.resp_protocol.RespParser`) hands each reply to the oldest
waiting future. A future cancelled while waiting has its reply dropped when it comes, so
the connection stays usable. When the connection fails (reset, closed by the server, a
protocol error, :meth:`Connection.abort`) every command in flight on it fails at once
with :class:`~.resp_protocol.RespConnectionError`. :class:`~.resp.RespClient` keeps a
pool of these and chooses one for each command.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

from .resp_protocol import ReplyError, RespConnectionError, RespParser, RespProtocolError

__all__ = ["Connection"]


class Connection(asyncio.Protocol):
    """One connection: commands written as they come, replies matched in FIFO order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = RespParser()
        self.pending: deque[asyncio.Future[Any]] = deque()
        self.busy_since = 0.0  # loop time of the last reply, or of a send to an idle one
        self._lost: asyncio.Future[None] = loop.create_future()
        self.closed = False
        self._unsent: list[bytes] = []  # this turn's commands, written by _flush

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
        self._write(data)
        return future

    def send_many(self, commands: Sequence[bytes]) -> list[asyncio.Future[Any]]:
        """Several packed commands in one write, in order (e.g. ASKING and the command)."""
        if self.closed or self._transport is None:
            raise RespConnectionError("the connection to Redis is closed")
        futures = [self._loop.create_future() for _ in commands]
        if not self.pending:
            self.busy_since = self._loop.time()
        self.pending.extend(futures)
        self._write(b"".join(commands))
        return futures

    @property
    def gathering(self) -> bool:
        """Commands of this turn wait to be written: another one joins their write."""
        return bool(self._unsent)

    def _write(self, data: bytes) -> None:
        if not self._unsent:
            self._loop.call_soon(self._flush)
        self._unsent.append(data)

    def _flush(self) -> None:
        unsent, self._unsent = self._unsent, []
        if self._transport is not None and not self.closed:
            self._transport.write(b"".join(unsent))

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
