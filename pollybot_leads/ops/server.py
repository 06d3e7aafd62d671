"""Serving one process: listen, answer malformed requests safely, drain on a signal.

:func:`serve_app` runs the application on an :class:`aiohttp.web.AppRunner` and a
:class:`ServingSite`. A stop signal (SIGTERM; SIGINT too when the process serves alone)
closes the listening socket, closes idle keep-alive connections, lets the requests in
flight finish within ``drain_seconds`` (aiohttp's graceful shutdown, whose
``shutdown_timeout`` this is), then runs the cleanup contexts and returns: the process
exits 0.

Requests aiohttp's HTTP parser rejects (a control character in a header, an over-long
line, an invalid method...) never reach the application. aiohttp answers them in
``RequestHandler.handle_error``, which logs an ERROR traceback quoting the offending
bytes (a whole ``Authorization`` line, secret included) and echoes them in a text/plain
body. :class:`SafeRequestHandler` replaces that for parser errors: one WARNING line
naming the error's class and the peer, never the bytes, at most a few lines a second
(:class:`~pollybot_leads.telemetry.logs.LogThrottle`, the rest counted in the next line and in
``pollybot_http_malformed_requests_total``), and a 400 in the JSON error envelope with a
request id, on a connection that is then closed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from yarl import URL

from ..errors import AppError
from ..http.errors import error_body
from ..http.security_headers import FIXED_HEADERS, NO_STORE
from ..telemetry import metrics
from ..telemetry.logs import LogThrottle

log = logging.getLogger("pollybot_leads.server")
malformed_log = logging.getLogger("pollybot_leads.malformed")
_MALFORMED_THROTTLE = LogThrottle(per_second=1.0, burst=5)
# After answering a request whose body was not read (a 413 for a declared 100 MB body),
# aiohttp reads and drops the rest for up to this long before closing, so that a client
# still sending sees the answer rather than a reset. Its default, 10 s, let a client
# that never sends hold the connection 10 s after its answer.
LINGERING_SECONDS = 1.0


class MalformedRequest(AppError):
    status, code, message = 400, "BAD_REQUEST", "Malformed HTTP request"


class SafeRequestHandler(web.RequestHandler):
    """aiohttp's connection handler, with parser errors answered and logged safely."""

    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        metrics.MALFORMED.inc()
        request_id = uuid.uuid4().hex
        write, held_back = _MALFORMED_THROTTLE.allow()
        if write:
            malformed_log.warning(
                "rejected a malformed HTTP request from %s: %s%s",
                request.remote or "unknown",
                type(exc).__name__,  # never str(exc): it quotes the request's bytes
                f" ({held_back} more since the previous line, not logged)" if held_back else "",
                extra={"request_id": request_id},
            )
        if request.writer.output_size > 0:  # a response has begun: nothing more to say
            raise ConnectionError("malformed request after a response began")
        error = MalformedRequest()
        error.status = status if 400 <= status < 500 else 400
        response = web.json_response(
            error_body(error, request_id),
            status=error.status,
            headers={"X-Request-Id": request_id, **FIXED_HEADERS, "Cache-Control": NO_STORE},
        )
        response.force_close()
        return response


class ServingSite(web.BaseSite):
    """A TCP site whose connections use :class:`SafeRequestHandler`.

    ``reuse_port``: SO_REUSEPORT, so that several worker processes each listen on the
    same port and the kernel spreads connections over them.
    """

    __slots__ = ("_host", "_port", "_reuse_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        reuse_port: bool = False,
        backlog: int = 1024,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host, self._port, self._reuse_port = host, port, reuse_port

    @property
    def name(self) -> str:
        return str(URL.build(scheme="http", host=self._host or "0.0.0.0", port=self._port))  # noqa: S104

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None

        def connection() -> web.RequestHandler:
            handler = server()
            handler.__class__ = SafeRequestHandler  # same slots: only handle_error differs
            return handler

        self._server = await asyncio.get_running_loop().create_server(
            connection,
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=True,
            reuse_port=self._reuse_port or None,
        )


async def serve_app(
    app: web.Application,
    *,
    host: str,
    port: int,
    drain_seconds: float,
    reuse_port: bool = False,
    stop_signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM),
    on_ready: Callable[[], object] | None = None,
) -> None:
    """Serve ``app`` until one of ``stop_signals``, then drain and clean up."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def stop_on(signum: signal.Signals) -> None:
        if stop.is_set():
            log.info("%s: already draining", signum.name)
            return
        log.info(
            "%s: no new connections; draining requests in flight for up to %g s",
            signum.name,
            drain_seconds,
        )
        stop.set()

    for signum in stop_signals:
        loop.add_signal_handler(signum, stop_on, signum)
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=drain_seconds,
        lingering_time=LINGERING_SECONDS,
    )
    try:
        await runner.setup()
        site = ServingSite(runner, host, port, reuse_port=reuse_port)
        await site.start()
        metrics.WORKER_UP.set(1)
        settle_garbage_collector()
        if on_ready is not None:
            on_ready()
        await stop.wait()
    finally:
        await runner.cleanup()
        for signum in stop_signals:
            loop.remove_signal_handler(signum)
    log.info("stopped")


# Python's cyclic garbage collector, tuned for serving. At its defaults (700, 10, 10) it
# cost a GET about 80 µs of server CPU in collections (gc.callbacks under wrk, 64
# connections), with pauses up to 60 ms: each young collection caught the objects of the
# requests in flight and promoted them, to be traversed again by the older ones, and the
# oldest traversed the application's ~63,000 objects every time. Frozen after start-up
# (they live as long as the process) and with young collections every 5,000 net
# allocations, collections cost about 33 µs per GET, with pauses up to about 20 ms.
GC_THRESHOLDS = (5000, 10, 10)


def settle_garbage_collector() -> None:
    """Once serving: what exists now lives as long as the process, so no collection needs
    to look at it again (gc.freeze); then the thresholds above."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (a network round trip costs about half the CPU)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(coro: Coroutine[Any, Any, None]) -> None:
    with asyncio.Runner(loop_factory=event_loop) as runner:
        runner.run(coro)
