"""Admission control toward the store: a bounded number of requests at work, a queue
whose wait is predicted, and a fast 503 for whatever would not be served in time.

Without it, every request that reaches the server goes to the store at once. When the
store slows down (a stall, a burst), the requests pile up on it, time out at their
budget, and leave their work running there: each one that times out closes its driver
connection (a new one, and a new server thread, for the next request) and may leave a
transaction open that later writes conflict with. The store then has more work than
before the stall, and the service stays down as long as the load lasts (docs/load.md).
Here:

- at most ``limit`` requests of a lane (reads: GET and HEAD; writes: the rest) are at
  work on the store at once; the others wait in order;
- a request is refused at once (503 with ``Retry-After``) when its predicted wait -- the
  requests waiting ahead of it, each kind at its own recent time per request, and one at
  work, over ``limit`` -- would not leave it the time to be served within its budget, or
  exceed ``max_wait``;
- a waiter whose turn comes too late to be served within its budget is refused, not
  started; one whose budget runs out while it waits is refused then;
- while every slot is taken and none has been given back for longer than the recent
  time per request (a stalled store), that silence counts as the time per request: new
  requests are refused at once instead of queuing for a store that does not answer;
- after a few requests in a row found the store unavailable (past their budget, or
  unreachable), the lane lets one request at a time try it until one succeeds: each
  request that times out leaves its command running in the store, and a lane that kept
  sending its full width would pile them up there for as long as the stall lasts.

Lanes keep writes (a commit and a journal sync each, far longer than a read) from taking
every slot from reads. Within a lane, a request whose handler is marked :func:`quick`
(one lead by id: one indexed read) goes ahead of the others waiting: a page of a list
costs the store tens of times as much, and a read lane kept narrow so that writes' own
statements wait less in the store would otherwise make every GET wait behind lists. So the
others' predicted wait counts the share of the lane the quick ones took in the last
second (a list is refused at once when GETs leave it too little), and a waiter that has
spent three quarters of the wait it was allowed goes before them: a stream of GETs would
otherwise keep it waiting to the end of its wait, to be refused late (after a second)
instead of served. A streamed export is not admitted here: it holds no slot, and
each of its steps has a budget of its own.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ..errors import Overloaded
from ..store.client import StoreUnavailable, remaining
from ..telemetry.metrics import admission_refused
from .cors import API_PREFIX
from .deadline import READ_METHODS, is_streamed

SMOOTHING = 0.1  # weight of the latest request in a lane's time per request
# A waiter not marked quick that has spent this share of the wait it was allowed goes
# ahead of the quick ones: otherwise a stream of GETs keeps a list waiting to the end of
# its wait, and it is refused late (after a second) instead of served.
OVERDUE_SHARE = 0.75
# The quick requests of the last this many seconds give their rate: the share of the
# lane they take, which the others wait behind (they go ahead of them).
QUICK_RATE_SECONDS = 1.0
# Store failures in a row after which a lane sends one request at a time (a probe).
TRIP_AFTER = 3


_QUICK = "__pollybot_quick__"


def quick(handler: Handler) -> Handler:
    """Mark a handler whose store work is one indexed read: it waits ahead of the others."""
    setattr(handler, _QUICK, True)
    return handler


def is_quick(request: web.Request) -> bool:
    return getattr(request.match_info.handler, _QUICK, False) is True


class _WaitOver(Exception):
    """A waiter's allowed wait ran out before a slot came."""


def _wait_over(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(_WaitOver())


@dataclass
class _Waiter:
    future: asyncio.Future[None]
    deadline: float
    quick: bool = False
    queued: float = 0.0  # when it began to wait
    until: float = 0.0  # when its wait ends (refused then)

    def overdue(self, now: float) -> bool:
        return now - self.queued >= OVERDUE_SHARE * (self.until - self.queued)


class Lane:
    """One kind of request's slots and queue (asyncio: one event loop)."""

    def __init__(self, name: str, limit: int, max_wait: float, initial: float) -> None:
        self.name = name
        self.limit = limit
        self.max_wait = max_wait
        self.service = initial  # seconds a request of this lane recently held its slot
        # The same for the quick requests (True) and the others (False): a list holds its
        # slot tens of times as long as a GET, and a wait predicted from their average
        # queued lists that could not be served in time (refused late, after waiting).
        self.kind_service = {True: initial, False: initial}
        self._quick_arrivals: collections.deque[float] = collections.deque()
        self.active = 0
        self.failing = 0  # requests in a row that found the store unavailable
        self._queue: collections.deque[_Waiter] = collections.deque()
        self._quick: collections.deque[_Waiter] = collections.deque()  # served first
        self._given_back = time.monotonic()
        self._full_since = self._given_back  # when its last free slot was taken

    @property
    def waiting(self) -> int:
        return len(self._queue) + len(self._quick)

    @property
    def width(self) -> int:
        """Slots open now: one while the store is failing, else the lane's limit."""
        return 1 if self.failing >= TRIP_AFTER else self.limit

    def per_request(self, now: float) -> float:
        """The lane's time per request, or the silence of a full lane if that is longer
        (counted from when it filled up: an idle lane that a burst fills is not silent)."""
        if self.active >= self.width:
            return max(self.service, now - max(self._given_back, self._full_since))
        return self.service

    def predicted_wait(self, now: float, *, quick: bool = False) -> float:
        """How long a request arriving now would wait: the work waiting ahead of it (the
        quick requests ahead of everyone, the others ahead of another one) and one
        request at work, over the slots; stretched by the silence of a full lane."""
        ahead = len(self._quick) * self.kind_service[True]
        if not quick:
            ahead += len(self._queue) * self.kind_service[False]
        stretch = self.per_request(now) / self.service if self.service > 0 else 1.0
        wait = (ahead + self.service) * stretch / self.width
        if quick:
            return wait
        # The quick requests that arrive meanwhile go ahead: the others have what they
        # leave of the lane (none: never served, so refused now rather than at the end).
        left = 1.0 - self.quick_share(now)
        return wait / left if left > 0.05 else math.inf

    def quick_share(self, now: float) -> float:
        """The share of the lane's slots the quick requests took of late."""
        self._forget_quick_before(now - QUICK_RATE_SECONDS)
        rate = len(self._quick_arrivals) / QUICK_RATE_SECONDS
        return rate * self.kind_service[True] / self.width

    def _forget_quick_before(self, moment: float) -> None:
        arrivals = self._quick_arrivals
        while arrivals and arrivals[0] < moment:
            arrivals.popleft()

    async def acquire(self, deadline: float, *, quick: bool = False) -> None:
        """A slot, or Overloaded (nothing started). ``quick``: ahead of the others."""
        now = time.monotonic()
        if quick:  # kept for a second only: a lane of GETs alone keeps no more
            self._forget_quick_before(now - QUICK_RATE_SECONDS)
            self._quick_arrivals.append(now)
        if self.active < self.width and not self.waiting:
            self.active += 1
            if self.active >= self.width:
                self._full_since = now
            return
        queue = self._quick if quick else self._queue
        room = min(self.max_wait, deadline - now - self.kind_service[quick])
        wait = self.predicted_wait(now, quick=quick)
        if wait > room or self.failing >= TRIP_AFTER:  # no queue behind a probe
            # An endless wait (quick requests take the whole lane) may end within the
            # second their share is measured over.
            raise self._refuse(wait if math.isfinite(wait) else QUICK_RATE_SECONDS)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        waiter = _Waiter(future, deadline, quick, now, now + room)
        queue.append(waiter)
        # The end of the wait: a timer that fails the future (asyncio.timeout's object,
        # current-task and cancel bookkeeping cost more, on most GETs under load).
        timer = loop.call_later(max(room, 0.0), _wait_over, future)
        try:
            await future
        except BaseException as exc:
            if not future.done() or future.cancelled():  # still in the queue: leave it
                future.cancel()
                with contextlib.suppress(ValueError):  # release() may have dropped it
                    queue.remove(waiter)
            elif isinstance(exc, _WaitOver):  # its wait ran out: out of the queue
                with contextlib.suppress(ValueError):
                    queue.remove(waiter)
            elif future.exception() is None:
                self.release(None)  # handed a slot just as the wait ended: give it back
            if isinstance(exc, _WaitOver):
                raise self._refuse(self.per_request(time.monotonic())) from None
            raise
        finally:
            timer.cancel()

    def release(self, held: float | None, *, failed: bool = False, quick: bool = False) -> None:
        """Give the slot back (``held``: seconds it was at work, to learn the pace;
        ``failed``: the store was unavailable to it; ``quick``: it was a quick one)."""
        now = time.monotonic()
        self._given_back = now
        if held is not None:
            self.service += SMOOTHING * (held - self.service)
            self.kind_service[quick] += SMOOTHING * (held - self.kind_service[quick])
        self.failing = self.failing + 1 if failed else 0
        if self.active > self.width:  # the lane just narrowed: this slot closes
            self.active -= 1
            for queue in (self._quick, self._queue):  # nobody waits for a failing store
                while queue:
                    waiter = queue.popleft()
                    if not waiter.future.done():
                        waiter.future.set_exception(self._refuse(self.service))
            return
        while self.waiting:
            waiter = self._next(now).popleft()
            if waiter.future.done():
                continue
            if waiter.deadline - now < self.kind_service[waiter.quick]:  # too late to serve
                waiter.future.set_exception(self._refuse(self.service))
                continue
            waiter.future.set_result(None)  # the slot passes on: active stays the same
            return
        self.active -= 1

    def _next(self, now: float) -> collections.deque[_Waiter]:
        """The queue the next waiter comes from: the quick one, unless the oldest other
        waiter is overdue (has spent :data:`OVERDUE_SHARE` of its allowed wait)."""
        if self._quick and not (self._queue and self._queue[0].overdue(now)):
            return self._quick
        return self._queue or self._quick

    def _refuse(self, wait: float) -> Overloaded:
        admission_refused(self.name)
        retry_after = max(1, min(30, math.ceil(wait)))
        return Overloaded(headers={"Retry-After": str(retry_after)})


class Admission:
    """The lanes of one process."""

    def __init__(
        self,
        *,
        read_limit: int,
        write_limit: int,
        max_wait: float,
        budget: float,
    ) -> None:
        self.budget = budget
        self.lanes = {
            "read": Lane("read", read_limit, max_wait, initial=0.01),
            "write": Lane("write", write_limit, max_wait, initial=0.1),
        }

    def lane_of(self, method: str) -> Lane:
        return self.lanes["read" if method in READ_METHODS else "write"]

    def middleware(self) -> Middleware:
        @web.middleware
        async def admission_middleware(
            request: web.Request, handler: Handler
        ) -> web.StreamResponse:
            if not request.path.startswith(API_PREFIX) or is_streamed(request):
                return await handler(request)
            lane = self.lane_of(request.method)
            left = remaining()  # the request's store budget, which its wait here spends
            deadline = time.monotonic() + (self.budget if left is None else left)
            quick = is_quick(request)
            await lane.acquire(deadline, quick=quick)
            admitted = time.monotonic()
            failed = False
            try:
                return await handler(request)
            except StoreUnavailable:
                failed = True
                raise
            finally:
                lane.release(time.monotonic() - admitted, failed=failed, quick=quick)

        return admission_middleware
