"""Telling a cancellation from a store error."""

from __future__ import annotations

import asyncio


def cancelling() -> bool:
    """Whether the running task was asked to stop. The driver may turn a cancellation
    inside a round trip into a connection error: a loop that retries on store errors
    must not take it for one (it would go on after being told to stop)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
