"""``Idempotency-Key`` on POST, PUT and DELETE: the first result is kept and replayed.

The key is scoped to the API key; the request is fingerprinted by method, path (with its
query) and body. A lead write completes its record inside its own transaction through a
receipt (``receipt_for``: the lease, and the answer the write renders from its outcomes;
the handler then sends what was kept with ``kept_response``). Any other result the
contract keeps (2xx, and 4xx but 401, 409 and 429) is completed here after the fact,
since it changed nothing. A result that is not kept (those, and 5xx) frees the key for a
retry.
"""

from __future__ import annotations

import hashlib

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ..errors import AppError, ValidationFailed
from ..http.context import AUTH, REQUEST_ID
from ..http.errors import error_response
from .records import Answer, IdempotencyStore, Lease, Receipt, StoredResponse

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
KEY_MAX = 255
METHODS = frozenset({"POST", "PUT", "DELETE"})
NOT_KEPT = frozenset({401, 409, 429})
# Headers that belong to the one response, not to the result replayed.
_NOT_STORED = frozenset({"content-length", "date", "server"})

LEASE = web.RequestKey("idempotency_lease", Lease)
KEPT = web.RequestKey("idempotency_kept", bool)


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


def response_of(result: StoredResponse) -> web.Response:
    """The response for a result: as rendered by a write, or as kept."""
    response = web.Response(status=result.status, body=result.body or None)
    response.headers.update(result.headers)
    return response


def _replay(result: StoredResponse) -> web.Response:
    response = response_of(result)
    response.headers[REPLAYED] = "true"
    return response


def receipt_for(request: web.Request, answer: Answer) -> Receipt | None:
    """The receipt a write completes in its transaction (rendering ``answer`` from its
    outcomes and keeping that with them), or None when the request has no key."""
    lease = request.get(LEASE)
    return None if lease is None else Receipt(lease, answer)


def kept_response(request: web.Request, result: StoredResponse) -> web.Response:
    """The response of a write whose own transaction kept ``result``: the middleware then
    has nothing left to complete."""
    request[KEPT] = True
    return response_of(result)


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
        if request.get(KEPT):
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
