"""Stopping background tasks, and telling a cancellation from a store error."""

from __future__ import annotations

import asyncio
from typing import Any


def cancelling() -> bool:
    """Whether the running task was asked to stop. The driver may turn a cancellation
    inside a round trip into a connection error: a loop that retries on store errors
    must not take it for one (it would go on after being told to stop)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def cancel_and_wait(task: asyncio.Task[Any]) -> BaseException | None:
    """Cancel ``task`` and wait until it has ended; what it ended with, other than the
    cancellation. A cancellation of the caller still comes through (awaiting the task
    under ``suppress(CancelledError)`` would swallow it)."""
    task.cancel()
    await asyncio.wait([task])
    return None if task.cancelled() else task.exception()
