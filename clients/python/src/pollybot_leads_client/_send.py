"""Sending a call: the one sync and the one async loop of tries every client uses (the
workspace clients and the admin clients alike). What to retry, and how an answer
becomes data or an error, is ``_core.py``'s."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Self

import httpx

from ._core import Call, Core, data_of

DEFAULT_BASE_URL = "http://127.0.0.1:8080"


class SyncSender:
    """A client's connection to the API: ``api_key``, ``base_url``, ``max_retries`` (2),
    ``timeout`` (seconds, 10) and, optionally, an httpx client of your own. A context
    manager, or call ``close()``."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        max_retries: int = 2,
        timeout: float = 10.0,
        http_client: httpx.Client | None = None,
    ) -> None:
        self._core = Core(api_key, base_url, max_retries, timeout)
        self._http = http_client or httpx.Client(timeout=timeout)
        self._attach()

    def _attach(self) -> None:
        """Set the client's resources (``leads``, ``workspaces``...)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def send(self, call: Call) -> httpx.Response:
        """The call's answer after its retries (its last answer), or the connection's
        error; the same headers, Idempotency-Key included, on every try."""
        headers = self._core.headers(call)
        attempt, start = 0, time.monotonic()
        while True:
            response: httpx.Response | None = None
            failure: httpx.TransportError | None = None
            try:
                response = self._http.request(
                    call.method,
                    self._core.url(call),
                    params=self._core.params(call),
                    json=call.json,
                    headers=headers,
                )
            except httpx.TransportError as exc:
                failure = exc
            elapsed = time.monotonic() - start
            outcome = self._core.settle(call, attempt, response, failure, elapsed)
            if isinstance(outcome, httpx.Response):
                return outcome
            time.sleep(outcome)
            attempt += 1

    def lines(self, call: Call) -> Iterator[str]:
        """A streamed answer's non-empty lines as they arrive (an error answer raises)."""
        core = self._core
        with self._http.stream(
            call.method, core.url(call), params=core.params(call), headers=core.headers(call)
        ) as response:
            if not response.is_success:
                response.read()
                data_of(response)
            for line in response.iter_lines():
                if line.strip():
                    yield line


class AsyncSender:
    """The same as ``SyncSender``, awaited: ``async with …`` or ``await close()``."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        max_retries: int = 2,
        timeout: float = 10.0,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._core = Core(api_key, base_url, max_retries, timeout)
        self._http = http_client or httpx.AsyncClient(timeout=timeout)
        self._attach()

    def _attach(self) -> None:
        """Set the client's resources."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def send(self, call: Call) -> httpx.Response:
        headers = self._core.headers(call)
        attempt, start = 0, time.monotonic()
        while True:
            response: httpx.Response | None = None
            failure: httpx.TransportError | None = None
            try:
                response = await self._http.request(
                    call.method,
                    self._core.url(call),
                    params=self._core.params(call),
                    json=call.json,
                    headers=headers,
                )
            except httpx.TransportError as exc:
                failure = exc
            elapsed = time.monotonic() - start
            outcome = self._core.settle(call, attempt, response, failure, elapsed)
            if isinstance(outcome, httpx.Response):
                return outcome
            await asyncio.sleep(outcome)
            attempt += 1

    async def lines(self, call: Call) -> AsyncIterator[str]:
        core = self._core
        async with self._http.stream(
            call.method, core.url(call), params=core.params(call), headers=core.headers(call)
        ) as response:
            if not response.is_success:
                await response.aread()
                data_of(response)
            async for line in response.aiter_lines():
                if line.strip():
                    yield line
