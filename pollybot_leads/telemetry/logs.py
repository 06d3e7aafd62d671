"""Logging: one handler on the root logger, text or JSON lines, the request id on each.

The request being handled is known through a context variable (:data:`request_id_var`),
set by the access-log middleware. :class:`RequestIdFilter` sits on the handler, so it
sees every record that reaches it, from any logger, and stamps it with that id: a line
written while a request is handled carries its id, whoever wrote it.

Access lines (logger ``pollybot_leads.access``) carry their fields under ``record.access``;
the JSON format puts them at the top level of the line. No formatter adds anything the
caller did not pass: what a line may contain is decided where it is written (never a
secret, a body, a header value or personal data).

One access line a request went through logging's records, filter and formatter: about a
tenth of a GET's CPU. So when nothing but :func:`setup_logging`'s own JSON handler would
see it (:func:`access_line_handler`), the line is built here by :func:`access_json_line`,
the same bytes :class:`JsonFormatter` writes, and the handler writes the lines of one
event-loop turn together at its end (one system call, not one a line). Any other handler
or filter on the way (a test's capture, a handler added later) sends them through logging.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any, TextIO

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
NO_REQUEST = "-"

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)


class RequestIdFilter(logging.Filter):
    """Gives every record ``request_id``: the current request's, else "-"."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            record.request_id = request_id_var.get() or NO_REQUEST
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, requestId, pid, and the
    access fields or the exception when there are any."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", NO_REQUEST)
        if request_id != NO_REQUEST:
            line["requestId"] = request_id
        line["pid"] = record.process
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            line.update(access)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


def make_formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"log format must be one of {LOG_FORMATS}")


def _json_time(created: float) -> str:
    """``JsonFormatter``'s time of a record created at ``created``: the same rounding
    (to the microsecond, half to even), the second's text made once a second."""
    global _second, _second_text
    second = int(created)
    micros = round((created - second) * 1e6)
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    if second != _second:
        _second_text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second = second
    return f"{_second_text}.{micros // 1000:03d}Z"


_second, _second_text = -1, ""
# This process's id, as a record's ``process``: os.getpid() is a system call each time.
_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def access_json_line(
    created: float, logger: str, message: str, request_id: str, access: dict[str, Any]
) -> str:
    """What :class:`JsonFormatter` writes for an INFO record of ``logger`` with this
    message, request id and access fields (str, int, float or None values), byte for byte."""
    parts = [
        f'{{"time": "{_json_time(created)}", "level": "INFO", "logger": ',
        encode_basestring(logger),
        ', "message": ',
        encode_basestring(message),
    ]
    if request_id != NO_REQUEST:
        parts += (', "requestId": ', encode_basestring(request_id))
    parts.append(f', "pid": {_pid}')
    for name, value in access.items():
        parts += (", ", encode_basestring(name), ": ", _json_value(value))
    parts.append("}")
    return "".join(parts)


def _json_value(value: Any) -> str:
    if isinstance(value, str):
        return encode_basestring(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if type(value) is int or (type(value) is float and math.isfinite(value)):
        return repr(value)  # what json.dumps writes for them
    return json.dumps(value, ensure_ascii=False, default=str)


class LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`setup_logging` installs: a StreamHandler that also takes lines
    already formatted (:meth:`write_line`), written at the end of the event loop's turn.
    A record it handles goes out after the lines written before it."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._pending: list[str] = []

    def write_line(self, line: str) -> None:
        with self.lock:  # type: ignore[union-attr]
            if not self._pending:
                try:
                    asyncio.get_running_loop().call_soon(self.write_pending)
                except RuntimeError:  # no event loop: at once
                    self._pending.append(line + self.terminator)
                    self.write_pending()
                    return
            self._pending.append(line + self.terminator)

    def write_pending(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self._pending:
                lines, self._pending = self._pending, []
                try:
                    self.stream.write("".join(lines))
                    self.stream.flush()
                except Exception:  # as logging does: a broken stream stops no request
                    self.handleError(logging.makeLogRecord({"msg": "access lines"}))

    def emit(self, record: logging.LogRecord) -> None:
        if self._pending:
            self.write_pending()
        super().emit(record)

    def flush(self) -> None:
        self.write_pending()
        super().flush()


def access_line_handler(logger: logging.Logger) -> LineHandler | None:
    """The JSON :class:`LineHandler` when it alone would see an INFO record of ``logger``
    (no other handler or filter on the way, the record's level let through), else None."""
    root = logging.root
    handlers = root.handlers
    if len(handlers) != 1 or root.filters:
        return None
    handler = handlers[0]
    if not isinstance(handler, LineHandler) or type(handler.formatter) is not JsonFormatter:
        return None
    if handler.level > logging.INFO:
        return None
    if any(type(f) is not RequestIdFilter for f in handler.filters):
        return None
    current: logging.Logger | None = logger
    while current is not None and current is not root:
        if current.handlers or current.filters or current.disabled or not current.propagate:
            return None
        current = current.parent
    return handler


def setup_logging(level: str, log_format: str, stream: TextIO | None = None) -> None:
    """Replace the root logger's handlers with one writing ``log_format`` lines."""
    handler = LineHandler(stream or sys.stderr)
    handler.setFormatter(make_formatter(log_format))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)


class LogThrottle:
    """At most ``burst`` lines at once and ``per_second`` lines a second after that.

    ``allow()`` answers whether to write a line now and, when it does, how many were
    held back since the previous one, so the line can say so.
    """

    def __init__(
        self,
        per_second: float = 1.0,
        burst: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate, self._burst, self._clock = per_second, float(burst), clock
        self._tokens = float(burst)
        self._stamp = clock()
        self._suppressed = 0
        self._lock = threading.Lock()

    def allow(self) -> tuple[bool, int]:
        with self._lock:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now
            if self._tokens < 1.0:
                self._suppressed += 1
                return False, 0
            self._tokens -= 1.0
            suppressed, self._suppressed = self._suppressed, 0
            return True, suppressed
