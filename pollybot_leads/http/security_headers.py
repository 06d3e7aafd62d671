"""Headers on every response (on_response_prepare, so errors and aiohttp's own too:
request_id.add_response_headers stamps them).

* ``Server: pollybot-leads``: no framework, language or version to fingerprint.
* ``X-Content-Type-Options: nosniff``: a browser never reads a JSON error as HTML.
* ``Cache-Control: no-store`` on API answers and every error: leads are personal data,
  and no shared cache should keep them. (The docs pages set their own.)
"""

from __future__ import annotations

from aiohttp import web

SERVER = "pollybot-leads"
API_PREFIX = "/api/v1/"
FIXED_HEADERS = {"Server": SERVER, "X-Content-Type-Options": "nosniff"}
NO_STORE = "no-store"


def stamp_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if request.path.startswith(API_PREFIX) or response.status >= 400:
        response.headers.setdefault("Cache-Control", NO_STORE)
