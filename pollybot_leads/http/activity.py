"""The API's requests in flight, as this process sees them: the in-process webhook
delivery gives way to them (webhooks/pacing.py).

Counted by the outermost layer (http/front.py), from each request's start to its
response. ``busy()`` is true while a request is in flight and for
:data:`QUIET_SECONDS` after the last one ended (a client sending request after request
leaves gaps of a fraction of a millisecond between them: those are not quiet).
"""

from __future__ import annotations

import time

from aiohttp import web

QUIET_SECONDS = 0.005


class RequestActivity:
    def __init__(self) -> None:
        self.in_flight = 0
        self._ended = float("-inf")

    def busy(self) -> bool:
        return self.in_flight > 0 or time.monotonic() - self._ended < QUIET_SECONDS

    def enter(self) -> None:
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1
        self._ended = time.monotonic()


request_activity_key = web.AppKey("request_activity", RequestActivity)
