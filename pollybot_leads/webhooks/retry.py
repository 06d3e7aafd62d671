"""When a failed delivery is tried again, and when it is given up."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

JITTER = 0.2  # each delay is drawn from +-20 % of the schedule's
RETRY_AFTER_MAX_SECONDS = 24 * 3600


@dataclass(frozen=True)
class RetryPolicy:
    """``schedule[n-1]`` seconds after the n-th failed attempt (the last delay repeats),
    with jitter, for at most ``retry_for_seconds`` after the delivery was queued."""

    schedule: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000)
    retry_for_seconds: float = 3 * 24 * 3600
    jitter: float = JITTER

    def next_attempt(
        self,
        *,
        failures: int,
        queued_at: datetime,
        now: datetime,
        retry_after: float | None = None,
    ) -> datetime | None:
        """When to try again after ``failures`` failed attempts; None: give up."""
        if retry_after is not None:
            delay = min(max(retry_after, 1.0), RETRY_AFTER_MAX_SECONDS)
        else:
            base = self.schedule[min(failures, len(self.schedule)) - 1]
            delay = base * random.uniform(1 - self.jitter, 1 + self.jitter)  # noqa: S311
        due = now + timedelta(seconds=delay)
        if due > queued_at + timedelta(seconds=self.retry_for_seconds):
            return None
        return due


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date; None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())
