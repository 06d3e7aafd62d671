"""Workspace API keys: Bearer secret -> key -> workspace, and the chatbot must be its own.

Only SHA-256 digests of secrets are stored. Resolved keys are cached for at most
``key_cache_seconds``, which bounds how long a revoked key keeps working.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from typing import Generic, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from .. import ids
from ..errors import ChatbotNotFound, RateLimited, ServiceUnavailable, Unauthorized
from ..http.context import AUTH, PROTECTED_PREFIX, ApiKeyRecord, AuthContext
from ..ratelimit.base import BucketPolicy, RateLimiter, RateLimiterUnavailable
from .repository import AccountRepository

CACHE_MAX_ENTRIES = 10_000
CHATBOT_CACHE_SECONDS = 60.0


V = TypeVar("V")


class _TtlCache(Generic[V]):
    def __init__(self, ttl: float, max_entries: int = CACHE_MAX_ENTRIES) -> None:
        self.ttl, self.max_entries = ttl, max_entries
        self._items: OrderedDict[str, tuple[float, V]] = OrderedDict()

    def get(self, key: str) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] < time.monotonic():
            del self._items[key]
            return None
        return item[1]

    def put(self, key: str, value: V) -> None:
        if self.ttl <= 0:
            return
        self._items[key] = (time.monotonic() + self.ttl, value)
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)


class Authenticator:
    def __init__(
        self,
        accounts: AccountRepository,
        *,
        key_cache_seconds: float,
        limiter: RateLimiter,
        failure_policy: BucketPolicy,
        trusted_proxies: tuple[str, ...] = (),
    ) -> None:
        self._accounts = accounts
        self._keys: _TtlCache[ApiKeyRecord] = _TtlCache(key_cache_seconds)
        self._chatbots: _TtlCache[str] = _TtlCache(
            min(CHATBOT_CACHE_SECONDS, max(key_cache_seconds, 1.0))
        )
        self._limiter = limiter
        self._failure_policy = failure_policy
        self._proxies = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]

    async def authenticate(self, request: web.Request, chatbot_id: str | None) -> AuthContext:
        """The key, and the chatbot when the route names one (it must be the key's)."""
        key = await self._key_for(request.headers.get("Authorization", ""))
        if key is None:
            await self._count_failure(request)
            raise Unauthorized()
        if chatbot_id is None:  # a workspace-wide route (webhooks)
            return AuthContext(key, "")
        if await self._chatbot_workspace(chatbot_id) != key.workspace_id:
            raise ChatbotNotFound()
        return AuthContext(key, chatbot_id)

    async def _key_for(self, header: str) -> ApiKeyRecord | None:
        scheme, _, secret = header.partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not ids.is_secret(secret):
            return None
        digest = ids.secret_digest(secret)  # the cache is keyed by digest, never the secret
        key = self._keys.get(digest)
        if key is None:
            key = await self._accounts.key_by_digest(digest=digest)
            if key is None or not key.active:
                return None
            self._keys.put(digest, key)
        return key

    async def _chatbot_workspace(self, chatbot_id: str) -> str | None:
        """The chatbot's workspace, None when there is no such chatbot.

        Absent chatbots are cached too (as ""), so that a 404 for a chatbot of another
        workspace and one for a chatbot that does not exist cost the same: the time of a
        404 does not tell whether the id exists. Ids are random, so no chatbot is created
        under an id someone asked for before.
        """
        workspace = self._chatbots.get(chatbot_id)
        if workspace is None:
            workspace = await self._accounts.chatbot_workspace(chatbot_id=chatbot_id) or ""
            self._chatbots.put(chatbot_id, workspace)
        return workspace or None

    async def _count_failure(self, request: web.Request) -> None:
        """Bad credentials spend tokens of the client address's own bucket."""
        try:
            decision = await self._limiter.take(
                "authfail:" + self.client_address(request), self._failure_policy
            )
        except RateLimiterUnavailable:
            raise ServiceUnavailable("Rate limiting is unavailable; retry shortly") from None
        if not decision.allowed:
            raise RateLimited(
                "Too many failed authentication attempts",
                headers={"Retry-After": str(decision.retry_after)},
            )

    def client_address(self, request: web.Request) -> str:
        """The peer, or the last untrusted hop of X-Forwarded-For when the peer is a proxy."""
        peer = request.remote or "unknown"
        if not self._trusted(peer):
            return peer
        hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",")]
        for hop in reversed([h for h in hops if h]):
            if not self._trusted(hop):
                return hop
        return peer

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._proxies)


authenticator_key = web.AppKey("authenticator", Authenticator)


def auth_middleware_factory(authenticator_key: web.AppKey[Authenticator]) -> Middleware:
    @web.middleware
    async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        info = request.match_info
        if info.http_exception is not None or not request.path.startswith(PROTECTED_PREFIX):
            return await handler(request)
        chatbot_id = info.get("chatbotId")
        request[AUTH] = await request.app[authenticator_key].authenticate(request, chatbot_id)
        return await handler(request)

    return auth_middleware
