"""``Idempotency-Key`` on POST, PUT and DELETE: the first result is kept and replayed.

The key is scoped to the API key; the request is fingerprinted by method, path (with its
query) and body. Lead writes complete their record inside their own transaction through
a receipt (``receipt_for``); any other result the contract keeps (2xx, and 4xx but 401,
409 and 429) is completed here after the fact, since it changed nothing. A result that
is not kept (those, and 5xx) frees the key for a retry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ..errors import AppError, ValidationFailed
from ..http.context import AUTH, REQUEST_ID
from ..http.errors import error_response
from .records import IdempotencyStore, Lease, StoredResponse

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
KEY_MAX = 255
METHODS = frozenset({"POST", "PUT", "DELETE"})
NOT_KEPT = frozenset({401, 409, 429})
# Headers that belong to the one response, not to the result replayed.
_NOT_STORED = frozenset({"content-length", "date", "server"})

LEASE = web.RequestKey("idempotency_lease", Lease)
RECEIPT = web.RequestKey("idempotency_receipt", object)


def _check_key(key: str) -> None:
    if not 1 <= len(key) <= KEY_MAX or not all(" " <= ch <= "~" for ch in key):
        raise ValidationFailed(
            "Invalid Idempotency-Key",
            details={HEADER: ["Must be 1-255 printable ASCII characters."]},
        )


def stored(response: web.Response) -> StoredResponse:
    headers = {k: v for k, v in response.headers.items() if k.lower() not in _NOT_STORED}
    body = response.body if isinstance(response.body, bytes) else b""
    return StoredResponse(response.status, body, headers)


def _replay(result: StoredResponse) -> web.Response:
    response = web.Response(status=result.status, body=result.body or None)
    response.headers.update(result.headers)
    response.headers[REPLAYED] = "true"
    return response


class HttpReceipt:
    """A lead write's receipt: renders the write's outcomes into the response that is
    both stored (in the write's transaction) and sent."""

    def __init__(self, lease: Lease, build: Callable[[list[Any]], web.Response]) -> None:
        self.lease, self._build = lease, build
        self.response: web.Response | None = None

    def render(self, outcomes: list[Any]) -> StoredResponse:
        self.response = self._build(outcomes)
        return stored(self.response)


def receipt_for(
    request: web.Request, build: Callable[[list[Any]], web.Response]
) -> HttpReceipt | None:
    """The receipt a write completes in its transaction, or None without a key."""
    lease = request.get(LEASE)
    if lease is None:
        return None
    receipt = HttpReceipt(lease, build)
    request[RECEIPT] = receipt
    return receipt


def idempotency_middleware_factory(
    store_key: web.AppKey[IdempotencyStore],
) -> Middleware:
    @web.middleware
    async def idempotency_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        key = request.headers.get(HEADER)
        # Only a write route's request: a 404, or the 405 of a method a path lacks (its
        # route's method is "*"), changes nothing and leaves the key neither used nor kept.
        if key is None or request.match_info.route.method not in METHODS or AUTH not in request:
            return await handler(request)
        _check_key(key)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            body = b""  # the handler answers 413 (and that result is kept)
        digest = hashlib.sha256()
        for part in (request.method.encode(), request.path_qs.encode(), body):
            digest.update(len(part).to_bytes(8, "big") + part)
        store = request.app[store_key]
        begun = await store.begin(
            scope=request[AUTH].key.id, key=key, fingerprint=digest.hexdigest()
        )
        if isinstance(begun, StoredResponse):
            return _replay(begun)
        request[LEASE] = begun
        try:
            response = await handler(request)
        except AppError as error:
            response = error_response(error, request[REQUEST_ID])
        except BaseException:
            await store.release(begun)
            raise
        receipt = request.get(RECEIPT)
        if isinstance(receipt, HttpReceipt) and response is receipt.response:
            return response  # completed in the write's own transaction
        if (
            isinstance(response, web.Response)
            and response.status < 500
            and response.status not in NOT_KEPT
        ):
            await store.complete(begun, stored(response))
        else:
            await store.release(begun)
        return response

    return idempotency_middleware
