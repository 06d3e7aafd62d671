"""The per-request values the middlewares share with handlers, under typed keys."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from .auth import AuthContext

REQUEST_ID = web.RequestKey("request_id", str)
# Headers added to whatever response goes out (rate-limit headers).
RESPONSE_HEADERS = web.RequestKey("response_headers", dict[str, str])
# The checked key and chatbot, once authentication has passed.
AUTH: web.RequestKey[AuthContext] = web.RequestKey("auth", Any)
