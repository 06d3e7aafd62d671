"""The documentation page: Swagger UI, served offline from the package, at /api/docs.

The page and its script are ours (``static/docs``); Swagger UI itself is vendored
unchanged and pinned (``static/swagger-ui``, see its README). The script hard-codes the
document's URL and turns off Swagger UI's query-string configuration, so
``/api/docs?url=…`` cannot make the page load a foreign document, and the page's
Content-Security-Policy lets it load scripts and data from this server only.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

from .openapi import add_spec_route

DOCS_URL = "/api/docs"
STATIC_URL = "/api/docs/static"
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
ASSETS = (  # every file the page may load; nothing else under STATIC_DIR is served
    "docs/docs.js",
    "docs/docs.css",
    "swagger-ui/swagger-ui-bundle.js",
    "swagger-ui/swagger-ui.css",
    "swagger-ui/favicon-32x32.png",
)
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",  # Swagger UI styles elements through the CSSOM: allowed
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
ASSET_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


async def redirect_to_docs(request: web.Request) -> web.StreamResponse:
    """``/``: the API has no home page; its documentation is the place to start."""
    raise web.HTTPFound(DOCS_URL)


def setup_docs(app: web.Application) -> None:
    """The OpenAPI document, the page and its assets. Call after every API route."""
    add_spec_route(app)
    page = (STATIC_DIR / "docs" / "index.html").read_bytes()

    async def docs_page(request: web.Request) -> web.Response:
        return web.Response(
            body=page, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS
        )

    app.router.add_get(DOCS_URL, docs_page, name="docs")
    for asset in ASSETS:
        app.router.add_get(f"{STATIC_URL}/{asset}", _asset_handler(STATIC_DIR / asset))


def _asset_handler(path: Path) -> Handler:
    if not path.is_file():
        raise FileNotFoundError(path)  # a missing asset is a packaging bug: fail at start

    async def asset(request: web.Request) -> web.FileResponse:
        return web.FileResponse(path, headers=ASSET_HEADERS)

    return asset
