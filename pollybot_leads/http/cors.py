"""CORS for the API (/api/v1/), off unless ``cors_origins`` lists browser origins.

* A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) to an
  API route is answered here, before authentication (browsers send no credentials on a
  preflight) and without spending rate-limit tokens: 204 with the route's methods, the
  request headers the API reads, and a max age; 403 ``ORIGIN_NOT_ALLOWED`` for an origin
  not listed; 404 for no such route.
* Every other response to an allowed origin, errors included (so a page can read a 401
  or 429 envelope), gets ``Access-Control-Allow-Origin`` (the origin itself) and
  ``Access-Control-Expose-Headers``. ``Vary: Origin`` tells caches the answer depends on
  the origin. No credentials mode: the API authenticates by header, never by cookie.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ..errors import AppError

API_PREFIX = "/api/v1/"
ALLOWED_HEADERS = (
    "Authorization",
    "Content-Type",
    "X-Request-Id",
    "X-Confirm-Delete",
    "Idempotency-Key",
    "If-Match",
    "If-None-Match",
)
EXPOSED_HEADERS = (
    "X-Request-Id",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "Retry-After",
    "Location",
    "ETag",
    "Idempotent-Replayed",
)
MAX_AGE_SECONDS = 600


class OriginNotAllowed(AppError):
    status, code, message = 403, "ORIGIN_NOT_ALLOWED", "This origin may not call the API"


class CorsPolicy:
    def __init__(self, origins: tuple[str, ...]) -> None:
        self.any_origin = "*" in origins
        self.origins = frozenset(o for o in origins if o != "*")

    def allows(self, origin: str) -> bool:
        return bool(origin) and (self.any_origin or origin in self.origins)

    def middleware(self) -> Middleware:
        @web.middleware
        async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            headers = request.headers
            if (
                request.method != "OPTIONS"
                or "Access-Control-Request-Method" not in headers
                or not request.path.startswith(API_PREFIX)
            ):
                return await handler(request)
            return self.preflight(request)

        return cors_middleware

    def preflight(self, request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin", "")
        if not self.allows(origin):
            raise OriginNotAllowed()
        exc = request.match_info.http_exception
        if not isinstance(exc, web.HTTPMethodNotAllowed):  # no route here (or one for OPTIONS)
            raise exc if exc is not None else web.HTTPNotFound()
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": ", ".join(sorted(exc.allowed_methods)),
                "Access-Control-Allow-Headers": ", ".join(ALLOWED_HEADERS),
                "Access-Control-Max-Age": str(MAX_AGE_SECONDS),
                "Vary": "Origin",
            },
        )

    async def add_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        """on_response_prepare: the CORS headers of a response to an allowed origin."""
        if not request.path.startswith(API_PREFIX):
            return
        origin = request.headers.get("Origin", "")
        vary = response.headers.get("Vary", "")
        if "origin" not in vary.lower():
            response.headers["Vary"] = f"{vary}, Origin" if vary else "Origin"
        if self.allows(origin):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers.setdefault("Access-Control-Expose-Headers", ", ".join(EXPOSED_HEADERS))
