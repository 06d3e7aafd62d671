"""The background delivery: a dispatcher and a sender, run by :class:`WebhookWorker`.

- The **dispatcher** takes events still marked ``pending`` (a sparse index holds only
  those), fans each out to the enabled endpoints that subscribe to it as delivery
  documents, then clears the mark; it also advances replays. Idempotent: see
  webhooks/deliveries.py.
- The **sender** claims due deliveries under a lease (any number of processes share
  the queue; a delivery is in one process's hands at a time), POSTs the signed event,
  and records the attempt and the outcome: 2xx within the timeout is delivered; 410
  disables the endpoint; anything else (an error status, a redirect, a timeout, a
  refused or unreachable address) is retried on the schedule of :class:`RetryPolicy`,
  or at ``Retry-After`` on a 429 or 503, until the retry window closes.

Both run as tasks of one process: inside ``serve`` (a cleanup context, so they start
and stop with the app and never sit in a request's path) or ``pollybot-leads worker``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter as Tally
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
from prometheus_client import Counter, Histogram

from ..cancellation import cancel_and_wait, cancelling
from ..errors import AppError
from ..leads.event_log import EVENT_RETENTION_SECONDS, EventSignal
from ..settings import Settings
from ..store.client import Mongo, store_deadline
from ..store.driver import PyMongoError
from ..timeutil import format_ts, utcnow
from .deliveries import DELIVERED, FAILED, PAUSED, PENDING, DeliveryQueue
from .pacing import Pacer
from .payload import event_body
from .repository import active_secrets
from .retry import RetryPolicy, parse_retry_after
from .signing import signed_headers
from .targets import GuardedResolver, TargetRefused, refused_literal

log = logging.getLogger(__name__)

RESPONSE_READ_MAX = 1024  # bytes of a receiver's answer read at most (then dropped)
ERROR_MAX = 200  # characters of an error kept in the attempt log
# After a store error the dispatcher and the sender wait before their next store step:
# 1 s, doubled after each failure in a row up to 16 s. A step that timed out may still be
# running in the store (a timeout leaves the command there), and a fixed pause added one
# more every second for as long as the store was slow (14 fan-outs queued behind one
# another in a soak: docs/load.md, section 5).
STORE_BACKOFF_SECONDS = 1.0
STORE_BACKOFF_MAX_SECONDS = 16.0
# A stream of writes is fanned out at most this often (see _dispatch_loop).
DISPATCH_INTERVAL_SECONDS = 0.05
# Each background store step gets its own budget (no request deadline applies here).
STORE_BUDGET_SECONDS = 10.0
# Events one fan-out takes at most: 500 kept the embedded store busy for about a second,
# every request waiting (see webhooks/pacing.py); 50 still fan out far faster than sends go.
FAN_OUT_EVENTS = 50
STORE_FAILURES = (PyMongoError, TimeoutError, OSError, AppError)

ATTEMPTS = Counter(
    "pollybot_webhook_attempts",
    "Webhook delivery attempts by outcome: delivered, retrying, failed (given up or 410)",
    ("outcome",),
)
ATTEMPT_SECONDS = Histogram(
    "pollybot_webhook_attempt_duration_seconds",
    "Time from sending a webhook to its answer (or error)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0),
)


@dataclass(frozen=True)
class SendResult:
    status: int | None
    error: str | None
    duration_ms: int
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True)
class DeliveryConfig:
    allow_private: bool = False
    timeout_seconds: float = 15.0
    concurrency: int = 16
    poll_seconds: float = 0.25
    lease_margin_seconds: float = 30.0
    dispatch_interval_seconds: float = DISPATCH_INTERVAL_SECONDS
    # While API requests are in flight in this process, the share of the time its
    # delivery may spend in store calls (webhooks/pacing.py); 1: no pacing.
    store_share: float = 1.0
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    # How long events are kept (retention.events_days): where a first dispatcher begins.
    event_retention_seconds: int = EVENT_RETENTION_SECONDS

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryConfig:
        return cls(
            allow_private=settings.webhook_allow_private,
            timeout_seconds=settings.webhook_timeout_seconds,
            concurrency=settings.webhook_concurrency,
            poll_seconds=settings.webhook_poll_seconds,
            lease_margin_seconds=settings.webhook_lease_margin_seconds,
            store_share=settings.webhook_store_share_under_load,
            policy=RetryPolicy(
                schedule=settings.webhook_retry_schedule,
                retry_for_seconds=settings.webhook_retry_for_seconds,
            ),
            event_retention_seconds=settings.retention_seconds["events"],
        )

    @property
    def lease_seconds(self) -> float:
        return self.timeout_seconds + self.lease_margin_seconds


class Backoff:
    """The pause after a background store step failed: doubled for each failure in a row."""

    def __init__(
        self, first: float = STORE_BACKOFF_SECONDS, most: float = STORE_BACKOFF_MAX_SECONDS
    ) -> None:
        self._first, self._most, self._failures = first, most, 0

    def failed(self) -> float:
        self._failures += 1
        return min(self._most, self._first * 2.0 ** (self._failures - 1))

    def succeeded(self) -> None:
        self._failures = 0


class WebhookWorker:
    def __init__(
        self,
        mongo: Mongo,
        config: DeliveryConfig,
        committed: EventSignal | None = None,
        busy: Callable[[], bool] | None = None,
    ) -> None:
        """``committed``: notified by this process's lead writes (serve); without it the
        dispatcher finds new events by polling alone. ``busy``: whether this process's
        API has requests in flight (serve); the store steps then keep to
        ``config.store_share`` of the time (webhooks/pacing.py)."""
        self.queue = DeliveryQueue(mongo, event_retention_seconds=config.event_retention_seconds)
        self.config = config
        self.pacer = Pacer(busy, config.store_share)
        self._committed = committed or EventSignal()
        self._wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._busy: Tally[str] = Tally()  # deliveries in flight by endpoint
        self._per_endpoint = max(1, config.concurrency // 4)  # at most in flight
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """Ask run() to return (it also returns when cancelled)."""
        self._stop.set()
        self._wake.set()

    def _stopping(self) -> bool:
        return self._stop.is_set() or cancelling()

    # --- running -----------------------------------------------------------------------

    async def run(self) -> None:
        """Dispatch and send until cancelled; deliveries in flight are then cancelled
        (their leases run out and another attempt follows: at least once)."""
        connector = aiohttp.TCPConnector(
            limit=self.config.concurrency,
            resolver=None if self.config.allow_private else GuardedResolver(),
        )
        async with aiohttp.ClientSession(
            connector=connector, auto_decompress=False, trust_env=False
        ) as session:
            self._session = session
            dispatcher = asyncio.create_task(self._dispatch_loop())
            try:
                await self._send_loop()
            finally:
                dispatcher.cancel()
                for task in list(self._in_flight):
                    task.cancel()
                await asyncio.gather(dispatcher, *self._in_flight, return_exceptions=True)
                self._session = None

    async def _dispatch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = Backoff()
        while not self._stopping():
            self._committed.clear()
            began = loop.time()
            try:
                async with self.pacer.step():
                    with store_deadline(STORE_BUDGET_SECONDS):
                        made = await self.queue.fan_out(limit=FAN_OUT_EVENTS)
                        replayed = await self.queue.advance_replays()
            except STORE_FAILURES as exc:
                if cancelling():
                    raise asyncio.CancelledError from exc
                pause = backoff.failed()
                log.warning(
                    "webhook dispatcher: store error %s; retrying in %.0f s",
                    type(exc).__name__,
                    pause,
                )
                await asyncio.sleep(pause)
                continue
            backoff.succeeded()
            if made or replayed:
                self._wake.set()
            if replayed or self.queue.pending.behind:
                continue  # more is waiting
            await self._committed.wait(self.config.poll_seconds)
            # At most one fan-out per interval: under a stream of writes each one takes
            # the events of several commits, in fewer and larger writes to the store.
            pause = self.config.dispatch_interval_seconds - (loop.time() - began)
            if pause > 0:
                await asyncio.sleep(pause)

    async def _send_loop(self) -> None:
        """Claim due deliveries in batches (when at least half the slots are free), at
        most a quarter of the slots per endpoint (a hanging one holds its slots for the
        whole timeout: the others keep the rest), and send each in a task of its own."""
        size = self.config.concurrency
        per_endpoint = self._per_endpoint
        backoff = Backoff()
        while not self._stopping():
            free = size - len(self._in_flight)
            if free < max(1, size // 2):
                await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                async with self.pacer.step():
                    self._wake.clear()  # what is queued or ends from now on wakes the next
                    with store_deadline(STORE_BUDGET_SECONDS):
                        batch = await self.queue.claim(
                            limit=size - len(self._in_flight),  # more may have ended
                            lease_seconds=self.config.lease_seconds,
                            room=lambda webhook_id: per_endpoint - self._busy[webhook_id],
                        )
                        endpoints, events = await self.queue.lookup(batch) if batch else ({}, {})
            except STORE_FAILURES as exc:
                if cancelling():
                    raise asyncio.CancelledError from exc
                pause = backoff.failed()
                log.warning(
                    "webhook sender: store error %s; retrying in %.0f s", type(exc).__name__, pause
                )
                await asyncio.sleep(pause)
                continue
            backoff.succeeded()
            if not batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.config.poll_seconds)
                continue
            for delivery in batch:
                endpoint = endpoints.get(delivery["webhookId"])
                event = events.get(delivery["eventId"])
                self._start(delivery, self._deliver_logged(delivery, endpoint, event))

    def _start(self, delivery: dict[str, Any], work: Coroutine[Any, Any, None]) -> None:
        webhook_id = delivery["webhookId"]
        self._busy[webhook_id] += 1
        task = asyncio.create_task(work)
        self._in_flight.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self._in_flight.discard(task)
            self._busy[webhook_id] -= 1
            if not self._busy[webhook_id]:
                del self._busy[webhook_id]
            # Half its endpoint's slots are free: claim now rather than after the poll
            # (not at every end: a claim costs several round trips, whatever its size).
            if self._busy[webhook_id] <= self._per_endpoint // 2:
                self._wake.set()

        task.add_done_callback(done)

    async def _deliver_logged(
        self,
        delivery: dict[str, Any],
        endpoint: dict[str, Any] | None,
        event: dict[str, Any] | None,
    ) -> None:
        try:
            await self.deliver(delivery, endpoint, event)
        except STORE_FAILURES as exc:
            if cancelling():
                raise asyncio.CancelledError from exc
            # The lease runs out and the delivery is claimed again: nothing is lost.
            log.warning("webhook %s: store error %s", delivery["_id"], type(exc).__name__)

    # --- one delivery ------------------------------------------------------------------

    async def deliver(
        self,
        delivery: dict[str, Any],
        endpoint: dict[str, Any] | None,
        event: dict[str, Any] | None,
    ) -> str:
        """Send one claimed delivery of ``event`` to ``endpoint`` (as read when it was
        claimed: None when gone) and record it; returns its new state."""
        if endpoint is None:
            async with self.pacer.step(wait=False):
                with store_deadline(STORE_BUDGET_SECONDS):
                    await self.queue.drop(delivery)
            return "dropped"
        if not endpoint["enabled"]:
            async with self.pacer.step(wait=False):
                with store_deadline(STORE_BUDGET_SECONDS):
                    await self.queue.finish(delivery, state=PAUSED, due_at=None, attempt=None)
            return PAUSED
        now = utcnow()
        if event is None:  # expired from the log (retention.events_days, at least the retries)
            result = SendResult(None, "The event is no longer in the event log", 0)
        else:
            result = await self.send(endpoint, event, now)
        return await self._record(delivery, result, now)

    async def _record(self, delivery: dict[str, Any], result: SendResult, at: datetime) -> str:
        due: datetime | None = None
        if result.ok:
            state, outcome = DELIVERED, "delivered"
        elif result.status == 410:
            state, outcome = FAILED, "disabled"
            async with self.pacer.step(wait=False):
                with store_deadline(STORE_BUDGET_SECONDS):
                    await self.queue.disable_endpoint(
                        delivery["webhookId"],
                        "The receiver answered 410 Gone: re-enable it to resume",
                    )
        else:
            done = utcnow()
            due = self.config.policy.next_attempt(
                failures=delivery.get("attempts", 0) + 1,
                queued_at=delivery["queuedAt"],
                now=done,
                retry_after=result.retry_after if result.status in (429, 503) else None,
            )
            state, outcome = (PENDING, "retrying") if due else (FAILED, "failed")
        ATTEMPTS.labels(outcome).inc()
        ATTEMPT_SECONDS.observe(result.duration_ms / 1000)
        attempt = {
            "webhookId": delivery["webhookId"],
            "deliveryId": delivery["_id"],
            "eventId": delivery["eventId"],
            "eventType": delivery["eventType"],
            "chatbotId": delivery["chatbotId"],
            "sequence": delivery["sequence"],
            "attempt": delivery.get("attempts", 0) + 1,
            "at": at,
            "statusCode": result.status,
            "error": result.error,
            "durationMs": result.duration_ms,
            "outcome": outcome,
            "nextAttemptAt": due,
        }
        async with self.pacer.step(wait=False):
            with store_deadline(STORE_BUDGET_SECONDS):
                await self.queue.finish(delivery, state=state, due_at=due, attempt=attempt)
        if outcome != "delivered":
            log.info(
                "webhook %s event %s: %s (%s)%s",
                delivery["webhookId"],
                delivery["eventId"],
                outcome,
                result.status or result.error,
                f", next attempt {format_ts(due)}" if due else "",
            )
        return state

    async def send(
        self, endpoint: dict[str, Any], event: dict[str, Any], now: datetime
    ) -> SendResult:
        """POST the signed event to the endpoint once."""
        url = endpoint["url"]
        body = event_body(event)
        timestamp = int(time.time())
        headers = signed_headers(active_secrets(endpoint, now), event["_id"], timestamp, body)
        headers["Content-Type"] = "application/json"
        started = time.perf_counter()

        def took() -> int:
            return round((time.perf_counter() - started) * 1000)

        if not self.config.allow_private:
            reason = refused_literal(url)
            if reason:
                return SendResult(None, f"Refused target: {reason}", 0)
        assert self._session is not None, "send runs inside run()"
        try:
            async with self._session.post(
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout_seconds),
            ) as response:
                await response.content.read(RESPONSE_READ_MAX)
                retry_after = parse_retry_after(response.headers.get("Retry-After"), utcnow())
                return SendResult(response.status, None, took(), retry_after)
        except TimeoutError:
            return SendResult(None, f"No answer within {self.config.timeout_seconds:g} s", took())
        except aiohttp.ClientConnectorDNSError as exc:
            if isinstance(exc.os_error, TargetRefused):
                return SendResult(None, f"Refused target: {exc.os_error}"[:ERROR_MAX], took())
            return SendResult(None, "DNS resolution failed", took())
        except aiohttp.ClientConnectorError as exc:
            reason = exc.os_error.strerror or str(exc)
            return SendResult(None, f"Connection failed: {reason}"[:ERROR_MAX], took())
        except aiohttp.ClientError as exc:
            return SendResult(None, f"{type(exc).__name__}: {exc}"[:ERROR_MAX], took())


@contextlib.asynccontextmanager
async def running_worker(
    mongo: Mongo,
    settings: Settings,
    committed: EventSignal | None = None,
    busy: Callable[[], bool] | None = None,
) -> AsyncIterator[WebhookWorker]:
    """A worker running in the background while the block runs; cancelled after it."""
    worker = WebhookWorker(mongo, DeliveryConfig.from_settings(settings), committed, busy)
    task = asyncio.create_task(worker.run(), name="webhooks")
    try:
        yield worker
    finally:
        worker.stop()
        failure = await cancel_and_wait(task)
        if failure is not None:
            log.error("webhook worker failed", exc_info=failure)
