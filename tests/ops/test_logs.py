"""Log lines: text or JSON, the current request's id on each, a throttle for noisy lines."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest

from pollybot_leads.settings import SettingsError, load_settings
from pollybot_leads.telemetry.logs import (
    JsonFormatter,
    LogThrottle,
    RequestIdFilter,
    access_json_line,
    access_line_handler,
    make_formatter,
    request_id_var,
    setup_logging,
)


def _record(msg: str = "hello %s", *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("pollybot_leads.x", logging.INFO, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


def test_the_filter_stamps_the_current_request_id_else_a_dash():
    record = _record()
    RequestIdFilter().filter(record)
    assert record.request_id == "-"
    token = request_id_var.set("rid-1")
    try:
        record = _record()
        RequestIdFilter().filter(record)
        assert record.request_id == "rid-1"
        given = _record(request_id="own")  # passed explicitly: kept
        RequestIdFilter().filter(given)
        assert given.request_id == "own"
    finally:
        request_id_var.reset(token)


def test_a_json_line_has_the_fields_and_the_access_fields_at_top_level():
    record = _record("GET %s", "/x", request_id="rid-2", access={"status": 200, "keyId": None})
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "GET /x" and line["level"] == "INFO"
    assert line["logger"] == "pollybot_leads.x" and line["requestId"] == "rid-2"
    assert line["status"] == 200 and line["keyId"] is None and isinstance(line["pid"], int)
    assert line["time"].endswith("Z")
    line = json.loads(JsonFormatter().format(_record(request_id="-")))
    assert "requestId" not in line


def test_a_json_line_holds_an_exception_on_one_line():
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = _record(exc_info=sys.exc_info(), request_id="-")
    out = JsonFormatter().format(record)
    assert "\n" not in out and "ValueError: boom" in json.loads(out)["exception"]


def restore_root(saved: tuple[list[logging.Handler], int]) -> None:
    """Put back the root logger's handlers and level as they were before setup_logging."""
    root = logging.getLogger()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])


def test_setup_logging_writes_every_line_with_the_request_id():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("INFO", "text", stream)
        token = request_id_var.set("rid-3")
        logging.getLogger("pollybot_leads.any.module").info("inside")
        request_id_var.reset(token)
        logging.getLogger("other").warning("outside")
        lines = stream.getvalue().splitlines()
        assert lines[0].endswith("INFO pollybot_leads.any.module [rid-3] inside")
        assert lines[1].endswith("WARNING other [-] outside")
    finally:
        restore_root(saved)
    with pytest.raises(ValueError):
        make_formatter("xml")


def test_log_format_and_worker_settings():
    s = load_settings({"LOG_FORMAT": "JSON", "WORKERS": "4", "DRAIN_SECONDS": "2.5"})
    assert (s.log_format, s.workers, s.drain_seconds) == ("json", 4, 2.5)
    assert load_settings({}).log_format == "text" and load_settings({}).workers == 1
    for env, named in (
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"WORKERS": "0"}, "WORKERS"),
        ({"WORKERS": "two"}, "WORKERS must be an integer"),
        ({"DRAIN_SECONDS": "0"}, "DRAIN_SECONDS"),
    ):
        with pytest.raises(SettingsError, match=named):
            load_settings(env)


def test_the_throttle_allows_a_burst_then_a_rate_and_counts_what_it_held_back():
    now = [0.0]
    throttle = LogThrottle(per_second=1.0, burst=3, clock=lambda: now[0])
    assert [throttle.allow() for _ in range(5)] == [(True, 0)] * 3 + [(False, 0)] * 2
    now[0] += 1.0
    assert throttle.allow() == (True, 2) and throttle.allow() == (False, 0)
    now[0] += 100.0
    assert [throttle.allow()[0] for _ in range(4)] == [True, True, True, False]


def test_an_access_line_built_without_a_record_is_the_json_formatters_byte_for_byte():
    for created in (1700000000.0, 1700000000.9999996, 1700000001.0004999, 1700000001.1235):
        for request_id in ("rid-9", "-", 'odd "id"\\'):
            for key_id, duration in (("key_1", 24.35), (None, 0.1), ("k\u00e9y", 1234.0)):
                access = {"method": "GET", "route": "/x/{id}", "status": 200}
                access |= {"durationMs": duration, "keyId": key_id}
                record = _record("GET %s", "/x/{id}", request_id=request_id, access=access)
                record.created, record.name = created, "pollybot_leads.access"
                line = access_json_line(
                    created, "pollybot_leads.access", "GET /x/{id}", request_id, access
                )
                assert line == JsonFormatter().format(record)


def test_access_lines_skip_logging_only_when_the_json_handler_alone_sees_them():
    stream = io.StringIO()
    root = logging.getLogger()
    access = logging.getLogger("pollybot_leads.access")
    saved = root.handlers[:], root.level
    try:
        setup_logging("INFO", "text", stream)
        assert access_line_handler(access) is None  # text lines: through logging
        setup_logging("INFO", "json", stream)
        handler = access_line_handler(access)
        assert handler is not None
        extra = logging.StreamHandler(io.StringIO())
        root.addHandler(extra)  # a capture, say: it must see them
        assert access_line_handler(access) is None
        root.removeHandler(extra)
        access.addFilter(lambda record: True)
        assert access_line_handler(access) is None
        access.filters.clear()

        # Lines of a loop's turn are written at its end, before any record after them.
        async def turn() -> str:
            handler.write_line("first")
            handler.write_line("second")
            held = stream.getvalue()
            logging.getLogger("pollybot_leads.x").warning("third")
            await asyncio.sleep(0)
            handler.write_line("fourth")
            await asyncio.sleep(0)
            return held

        assert asyncio.run(turn()) == ""
        lines = stream.getvalue().splitlines()
        assert lines[:2] == ["first", "second"] and '"message": "third"' in lines[2]
        assert lines[3:] == ["fourth"]
        handler.write_line("no loop")  # at once
        assert stream.getvalue().endswith("no loop\n")
    finally:
        restore_root(saved)
