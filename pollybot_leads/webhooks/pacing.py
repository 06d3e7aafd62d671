"""The in-process delivery gives way to the API: a budget of store time while it is busy.

Inside ``serve`` the delivery shares the store (and this process) with the requests,
and each delivery costs the store several durable writes (its fan-out, lease, finish
and attempt record). Under a stream of requests that came out of the requests' share:
creates lost a third of their throughput with 3 endpoints subscribed, GETs more.

So while requests are in flight (``busy``), the delivery's store steps (a fan-out, a
claim, a finish) may take at most ``share`` of the wall time: after a stretch of
steps that took ``t`` seconds, the next may begin ``t * (1 - share) / share`` seconds
later, or as soon as the API is quiet. Steps that start together (the finishes of a
batch) run together and count once. ``share`` is also the floor: under
a load that never stops, delivery still gets that share of the time, so deliveries are
delayed, never starved, and the backlog drains at full speed once the load drops.

Why a small share (0.02 by default): a share of 0.1 still cost creates about a third,
0.01 nothing measurable (scripts/bench_webhooks.py; docs/benchmarks.md and
docs/stores.md have the figures): a fan-out of a large backlog keeps the store busy
while requests wait.

Pacing bounds the share, not the length of one step: a fan-out of 500 events kept the
embedded store busy for about a second, during which every request waited, busy API or
not. A fan-out
therefore takes at most ``FAN_OUT_EVENTS`` events (webhooks/delivery.py): steps of a
tenth of that, paused accordingly, for the same share.

Finishes are counted but never held back (``step(wait=False)``): a delivery already
sent must not outlive its lease waiting for the store; its cost delays the next claim.
Only stretches that begin and end while the API is busy are counted: work done while it
was quiet does not hold back the first steps of the next busy spell.

A ``pollybot-leads worker`` process cannot see the API's requests: it is not paced.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

from prometheus_client import Counter

TICK_SECONDS = 0.01  # how often a held step looks whether the API went quiet

HELD_SECONDS = Counter(
    "pollybot_webhook_store_held_seconds",
    "Seconds webhook delivery steps (fan-outs, claims) waited for the API's requests",
)


class Pacer:
    def __init__(self, busy: Callable[[], bool] | None, share: float) -> None:
        """``busy``: whether API requests are in flight (None, or ``share`` 1: no pacing)."""
        self._busy = busy if share < 1 else None
        self._share = share
        self._active = 0
        self._began = 0.0
        self._charged = False  # the stretch running began while the API was busy
        self._next = 0.0  # while busy, steps begin no earlier than this

    def busy(self) -> bool:
        """Whether steps are paced now (API requests in flight)."""
        return self._busy is not None and self._busy()

    @contextlib.asynccontextmanager
    async def step(self, *, wait: bool = True) -> AsyncIterator[None]:
        if wait:
            await self._admit()
        if self._active == 0:
            self._began = time.monotonic()
            self._charged = self._busy is not None and self._busy()
        self._active += 1
        try:
            yield
        finally:
            self._active -= 1
            if self._active == 0 and self._charged and self._busy is not None and self._busy():
                now = time.monotonic()
                pause = (now - self._began) * (1 - self._share) / self._share
                self._next = max(self._next, now + pause)

    async def _admit(self) -> None:
        if self._busy is None:
            return
        began = now = time.monotonic()
        while self._busy():
            if self._active == 0 and now >= self._next:
                break
            # A stretch still running (wait for it to end: joining would stretch it
            # for as long as steps keep coming), or its pause not over.
            left = TICK_SECONDS if self._active else self._next - now
            await asyncio.sleep(min(left, TICK_SECONDS))
            now = time.monotonic()
        if now > began:
            HELD_SECONDS.inc(now - began)
