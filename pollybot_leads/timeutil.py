"""UTC timestamps at millisecond precision, rendered as ``2024-01-15T10:30:00.000Z``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

MILLISECOND = timedelta(milliseconds=1)
ZERO = timedelta(0)


def utcnow() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def to_ms(value: datetime) -> datetime:
    """Aware UTC, truncated to milliseconds (what BSON dates can hold)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def format_ts(value: datetime) -> str:
    """``2024-01-15T10:30:00.000Z``: UTC, truncated to milliseconds, the year in four
    digits (``0001`` too). A UTC value, as the store returns, skips the conversion."""
    tz = value.tzinfo
    if tz is not UTC and tz is not None and value.utcoffset() != ZERO:
        value = value.astimezone(UTC)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (  # noqa: UP031 (faster than isoformat)
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond // 1000,
    )
