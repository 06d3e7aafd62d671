"""RESP2, the Redis wire format: errors, command encoding and an incremental reply parser.

Used by :mod:`.resp` (the rate limiter's Redis client) and :mod:`.resp_connection`.
Arrays nest at most :data:`MAX_DEPTH` deep; a deeper reply is a :class:`RespProtocolError`.
"""

from __future__ import annotations

from typing import Any

DEFAULT_PORT = 6379
MAX_DEPTH = 8
"""Deepest nesting of arrays a reply may have (the deepest Redis sends us, CLUSTER SLOTS,
has 3 levels); deeper is a protocol error, so a hostile stream cannot exhaust the stack."""
_CRLF = b"\r\n"


class RespError(Exception):
    """Base class of the errors raised by this module."""


class ReplyError(RespError):
    """The server answered with an error reply (``-ERR ...``)."""


class NoScriptError(ReplyError):
    """``-NOSCRIPT``: the server does not know the script's SHA1 (load it again)."""


class AuthenticationError(ReplyError):
    """AUTH was refused (``WRONGPASS``...), or a command needs it (``NOAUTH``)."""


class RespConnectionError(RespError, ConnectionError):
    """The connection failed or was dropped; the command's outcome is unknown."""


class RespProtocolError(RespConnectionError):
    """The server sent bytes that are not RESP2 (the connection is dropped)."""


class ClusterError(ReplyError):
    """``-MOVED``/``-ASK`` the client could not follow, or ``-CLUSTERDOWN``/``-TRYAGAIN``."""


_ERROR_TYPES: dict[str, type[ReplyError]] = {
    "NOSCRIPT": NoScriptError,
    "NOAUTH": AuthenticationError,
    "WRONGPASS": AuthenticationError,
    "MOVED": ClusterError,
    "ASK": ClusterError,
    "CLUSTERDOWN": ClusterError,
    "TRYAGAIN": ClusterError,
}


def reply_error(message: str) -> ReplyError:
    """The exception for an error reply's text (without the leading ``-``)."""
    code = message.split(" ", 1)[0]
    kind = _ERROR_TYPES.get(code)
    if kind is None:
        if message.startswith(("ERR invalid password", "ERR AUTH", "ERR Client sent AUTH")):
            kind = AuthenticationError
        else:
            kind = ReplyError
    return kind(message)


# --- encoding ------------------------------------------------------------------------------


def _arg(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int) and not isinstance(value, bool):
        return b"%d" % value
    if isinstance(value, float):
        return repr(value).encode()
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"a Redis command argument must be bytes, str, int or float, not {value!r}")


def pack_command(*args: Any) -> bytes:
    """One command as a RESP2 array of bulk strings."""
    if not args:
        raise ValueError("an empty Redis command")
    return b"*%d\r\n%s" % (len(args), pack_args(args))


def pack_args(args: tuple[Any, ...]) -> bytes:
    """``args`` as consecutive RESP2 bulk strings (a command without its ``*N`` header)."""
    parts = []
    for value in args:
        kind = type(value)  # the usual types first, without a call
        if kind is str:
            data = value.encode()
        elif kind is bytes:
            data = value
        elif kind is int:
            data = b"%d" % value
        else:
            data = _arg(value)
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


# --- parsing -------------------------------------------------------------------------------


class _Incomplete(Exception):
    """More bytes are needed; ``need`` is the buffer length worth trying again at."""

    def __init__(self, need: int) -> None:
        self.need = need


INCOMPLETE: Any = object()
"""What :meth:`RespParser.gets` returns while no complete reply is buffered."""


class RespParser:
    """Incremental RESP2 parser.

    Either :meth:`replies` with each chunk read (all the replies it completes), or
    :meth:`feed` and then :meth:`gets` until :data:`INCOMPLETE`. A chunk that arrives with
    nothing buffered is parsed where it is, without a copy (the usual case: whole replies).
    A reply split over several reads is parsed again from its start when more bytes have
    come; a long bulk string is not tried again before all its bytes can be there, so big
    replies cost linear time.
    """

    __slots__ = ("_buf", "_need", "_pos")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0  # start of the first unparsed reply
        self._need = 0  # do not try again before the buffer holds this many bytes

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as replies."""
        return len(self._buf) - self._pos

    def replies(self, data: bytes) -> list[Any]:
        """Take one chunk read; return the replies now complete, in order.

        Raises :class:`RespProtocolError` (the stream is then unusable: drop it).
        """
        buf: bytes | bytearray
        if self._pos == len(self._buf):  # nothing buffered: parse the chunk itself
            buf, pos = data, 0
        else:
            self._buf += data
            buf, pos = self._buf, self._pos
            if len(buf) < self._need:
                return []
        out: list[Any] = []
        end = len(buf)
        try:
            while pos < end:
                value, pos = self._parse(buf, pos, 0)
                out.append(value)
        except _Incomplete as more:  # ``pos`` is where the incomplete reply starts
            if buf is data:
                self._buf[:] = data[pos:]
                self._need, self._pos = more.need - pos, 0
            else:
                self._need, self._pos = more.need, pos
                if pos > 65536:
                    del self._buf[:pos]
                    self._need, self._pos = more.need - pos, 0
            return out
        self._need = 0
        if buf is not data:
            self._buf.clear()
            self._pos = 0
        return out

    def gets(self) -> Any:
        """The next complete reply, or :data:`INCOMPLETE`; raises RespProtocolError."""
        buf = self._buf
        if len(buf) < self._need or self._pos >= len(buf):
            return INCOMPLETE
        try:
            value, pos = self._parse(buf, self._pos, 0)
        except _Incomplete as more:
            self._need = more.need
            return INCOMPLETE
        self._need = 0
        if pos == len(buf):
            buf.clear()
            self._pos = 0
        elif pos > 65536:
            del buf[:pos]
            self._pos = 0
        else:
            self._pos = pos
        return value

    def _parse(self, buf: bytes | bytearray, pos: int, depth: int) -> tuple[Any, int]:
        end = buf.find(_CRLF, pos)
        if end < 0:
            raise _Incomplete(len(buf) + 1)
        kind = buf[pos]
        line = buf[pos + 1 : end]
        pos = end + 2
        try:
            if kind == 0x3A:  # ':' integer
                return int(line), pos
            if kind == 0x24:  # '$' bulk string
                size = int(line)
                if size < 0:
                    return None, pos
                stop = pos + size
                if len(buf) < stop + 2:
                    raise _Incomplete(stop + 2)
                if buf[stop : stop + 2] != _CRLF:
                    raise RespProtocolError("a bulk string is not followed by CRLF")
                return bytes(buf[pos:stop]), stop + 2
            if kind == 0x2A:  # '*' array
                count = int(line)
                if count < 0:
                    return None, pos
                if depth >= MAX_DEPTH:
                    raise RespProtocolError(f"a reply nested deeper than {MAX_DEPTH} arrays")
                items: list[Any] = []
                append = items.append
                for _ in range(count):
                    if pos < len(buf) and buf[pos] == 0x3A:  # an integer: no recursion
                        end = buf.find(_CRLF, pos)
                        if end < 0:
                            raise _Incomplete(len(buf) + 1)
                        line = buf[pos + 1 : end]
                        append(int(line))
                        pos = end + 2
                    else:
                        item, pos = self._parse(buf, pos, depth + 1)
                        append(item)
                return items, pos
            if kind == 0x2B:  # '+' simple string
                return bytes(line), pos
            if kind == 0x2D:  # '-' error
                return reply_error(line.decode("utf-8", "replace")), pos
        except ValueError as exc:
            raise RespProtocolError(f"bad RESP length or integer: {bytes(line)[:40]!r}") from exc
        raise RespProtocolError(f"unknown RESP type byte {bytes([kind])!r}")
