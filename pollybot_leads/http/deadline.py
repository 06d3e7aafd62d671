"""Every request gets one store budget: no request can hold the store, or wait on it,
for longer than ``mongodb.timeout_ms``, and every client has its answer soon after.

A streamed response (an export) is the one exception, and only once its first byte is
out: its handler is marked with :func:`streamed`, runs each store step through
:meth:`StreamBudget.step` with a budget of its own (the same length), and calls
:meth:`StreamBudget.begin` right before it sends its headers. Until then the request's
budget and hard cap hold as for any request (a stalled store is a 503 envelope); after,
the stream lasts as long as its steps keep within their budgets, and one that does not
ends the stream (the handler closes the connection: the client sees a cut transfer).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ..store.client import Mongo, store_deadline, unavailable

T = TypeVar("T")

# The driver checks some waits (server selection) only every half second, so a request
# can overrun its store budget by that much. Past the budget and this slack the client
# gets its 503 at once. The handler is not cancelled (cancelling the driver mid-call can
# leave its connection pool unable to recover): it finishes in the background within
# the driver's own deadline, and its result is dropped.
#
# That takes a task per request, and the waits it guards against only happen while the
# driver looks for a server. So while PyMongo's client knows a server to write to
# (Mongo.primary_known: a primary, a mongos, or a direct connection's one server), every
# store call finds its server at once, its socket reads, connection checkout and
# server-side maxTimeMS all keep to the budget, and the handler runs in the request's
# own task with the budget alone. The task and its timer had cost about a tenth of a
# GET's server CPU (697 -> 624 µs in one side-by-side run; on the embedded store, a
# direct connection, 1,022 -> 919 µs once it took this path too). A server lost in the
# middle of a request can still make its next store call wait for selection: by at
# most the half second above.
HARD_CAP_SLACK_SECONDS = 0.25
# A write (anything but GET and HEAD) always runs in a task of its own, and a store call
# it has in flight when its budget runs out may go on this much longer: its client has
# its 503 at the budget all the same, but the driver does not cut the connection in the
# middle of a transaction's statement or commit. A cut one left the transaction open in
# the store, holding its documents and pinning the store's history, until an abort got
# through (docs/load.md); the admission lanes bound how many such writes run on.
WRITE_GRACE_SECONDS = 5.0
READ_METHODS = frozenset(("GET", "HEAD"))
_OVERRUNS: set[asyncio.Task[Any]] = set()
_STREAMED = "__pollybot_streamed__"


def _forget(task: asyncio.Task[Any]) -> None:
    _OVERRUNS.discard(task)
    if not task.cancelled():
        with contextlib.suppress(Exception):
            task.exception()  # retrieved: an overrun's failure is already a 503


def _overrun(task: asyncio.Task[Any]) -> None:
    _OVERRUNS.add(task)
    task.add_done_callback(_forget)


def streamed(handler: Handler) -> Handler:
    """Mark a handler whose response is streamed: it gets a StreamBudget (STREAM_BUDGET)."""
    setattr(handler, _STREAMED, True)
    return handler


def stepped(handler: Handler) -> Handler:
    """Mark a handler whose store work runs in steps, each with a budget of its own (an
    erasure of many leads): it gets a StreamBudget as a streamed one does, and calls
    ``begin`` once its request is validated; its answer is not streamed."""
    return streamed(handler)


def is_streamed(request: web.Request) -> bool:
    """Whether the request's handler was marked with :func:`streamed`."""
    return getattr(request.match_info.handler, _STREAMED, False) is True


@dataclass
class StreamBudget:
    """A streamed response's store budgets: one per step, none for the whole stream."""

    seconds: float
    context: contextvars.Context  # the request's context before its store budget began
    started: asyncio.Future[None]  # set by begin(); cancelled once the request got a 503

    def begin(self) -> None:
        """The response's first byte is next: the request's own budget no longer applies.
        Raises (a 503) when that budget already ran out: the client has its 503."""
        if self.started.done():
            raise unavailable()
        self.started.set_result(None)

    async def step(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work()`` with a store budget of ``seconds`` of its own (and the same hard
        cap as a request), outside the request's budget."""

        async def bounded() -> T:
            with store_deadline(self.seconds):
                return await work()

        loop = asyncio.get_running_loop()
        task = loop.create_task(bounded(), context=self.context.copy())
        try:
            done, _ = await asyncio.wait({task}, timeout=self.seconds + HARD_CAP_SLACK_SECONDS)
        except asyncio.CancelledError:
            _overrun(task)
            raise
        if done:
            return task.result()
        _overrun(task)
        raise unavailable()


STREAM_BUDGET = web.RequestKey("stream_budget", StreamBudget)


def deadline_middleware_factory(seconds: float, mongo_key: web.AppKey[Mongo]) -> Middleware:
    @web.middleware
    async def deadline_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        streams = is_streamed(request)
        mongo = request.app.get(mongo_key)
        reads = request.method in READ_METHODS
        if reads and not streams and mongo is not None and mongo.primary_known():
            with store_deadline(seconds):
                return await handler(request)
        budget = None
        if streams:
            started = asyncio.get_running_loop().create_future()
            budget = StreamBudget(seconds, contextvars.copy_context(), started)
            request[STREAM_BUDGET] = budget
        with store_deadline(seconds, grace=0.0 if reads else WRITE_GRACE_SECONDS):
            task = asyncio.ensure_future(handler(request))  # inherits the deadline
        waits: set[asyncio.Future[Any]] = {task} if budget is None else {task, budget.started}
        try:
            done, _ = await asyncio.wait(
                waits, timeout=seconds + HARD_CAP_SLACK_SECONDS, return_when=asyncio.FIRST_COMPLETED
            )
        except asyncio.CancelledError:  # the client left: the work ends on its own, unread
            _overrun(task)
            raise
        if task in done:
            return task.result()
        if done:  # the stream began within the budget; its steps have budgets of their own
            return await task
        if budget is not None:
            budget.started.cancel()
        _overrun(task)
        raise unavailable()

    return deadline_middleware
