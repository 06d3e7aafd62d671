"""Timestamps as every response shows them: UTC, milliseconds, ``Z``."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from bson.tz_util import utc as bson_utc

from pollybot_leads.timeutil import format_ts


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (datetime(2024, 1, 15, 10, 30, 0, 123999, tzinfo=UTC), "2024-01-15T10:30:00.123Z"),
        (datetime(2024, 1, 15, 10, 30, tzinfo=bson_utc), "2024-01-15T10:30:00.000Z"),
        (datetime(1, 1, 1, tzinfo=UTC), "0001-01-01T00:00:00.000Z"),
        (datetime(999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC), "0999-12-31T23:59:59.999Z"),
        (
            datetime(2024, 1, 15, 12, 30, 0, 5000, tzinfo=timezone(timedelta(hours=2))),
            "2024-01-15T10:30:00.005Z",
        ),
        (datetime(2024, 1, 15, 10, 30, 0, 999), "2024-01-15T10:30:00.000Z"),  # naive: UTC
    ],
)
def test_timestamps_are_utc_milliseconds_with_a_four_digit_year(
    value: datetime, shown: str
) -> None:
    assert format_ts(value) == shown
