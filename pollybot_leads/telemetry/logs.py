"""Logging: one handler on the root logger, text or JSON lines, the request id on each.

The request being handled is known through a context variable (:data:`request_id_var`),
set by the access-log middleware. :class:`RequestIdFilter` sits on the handler, so it
sees every record that reaches it, from any logger, and stamps it with that id: a line
written while a request is handled carries its id, whoever wrote it.

Access lines (logger ``pollybot_leads.access``) carry their fields under ``record.access``;
the JSON format puts them at the top level of the line. No formatter adds anything the
caller did not pass: what a line may contain is decided where it is written (never a
secret, a body, a header value or personal data).
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
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


def setup_logging(level: str, log_format: str, stream: TextIO | None = None) -> None:
    """Replace the root logger's handlers with one writing ``log_format`` lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
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
