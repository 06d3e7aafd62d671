"""A real HTTP receiver for deliveries: an aiohttp server on a free local port whose
answers a test scripts, and which can go down and come back on the same port."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from pollybot_leads.store.embedded import free_port


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic()


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (a hanging receiver)


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[Received] = []
        self.answers: list[Answer] = []  # used in order, then ``default``
        self.default = Answer()
        # (path, webhook-id) -> requests being handled now: one endpoint's one event
        self.in_flight: dict[str, int] = {}
        self.overlaps = 0  # times one endpoint's event was in flight twice at once
        self.arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        msg_id = request.path + " " + request.headers.get("webhook-id", "")
        self.in_flight[msg_id] = self.in_flight.get(msg_id, 0) + 1
        if self.in_flight[msg_id] > 1:
            self.overlaps += 1
        try:
            self.received.append(Received(dict(request.headers), body, time.monotonic()))
            self.arrived.set()
            answer = self.answers.pop(0) if self.answers else self.default
            if answer.delay:
                await asyncio.sleep(answer.delay)
            return web.Response(status=answer.status, headers=answer.headers, text="ok")
        finally:
            self.in_flight[msg_id] -= 1

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        app.router.add_post("/elsewhere", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Until ``count`` requests have arrived (fails the test after ``timeout``)."""
        await wait_until(lambda: len(self.received) >= count, timeout)
        return self.received


async def wait_until(check: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.02)
