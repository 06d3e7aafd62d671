"""Workspace API keys: Bearer secret -> key -> workspace, and the chatbot must be its own.

Only SHA-256 digests of secrets are stored. Resolved keys are cached for at most
``key_cache_seconds``, which bounds how long a revoked key keeps working.

What a bad request costs is bounded, not the store's to pay: bad credentials spend the
client address's failure bucket, and a key that has to be looked up takes that token
*before* the store is asked (given back when the key is good), so an address with none
left is refused without a store query; digests no active key has are remembered for a
while. The key is found in one step and the chatbot checked in another, after the
rate limit's (http/steps.py: one middleware runs the three): a request for a chatbot
the key does not have spends the key's tokens like any other. Negative answers are
cached apart from positive ones, so that a flood of random keys or chatbot ids never
pushes a good one out.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from aiohttp import web

from .. import ids
from ..errors import (
    ChatbotNotFound,
    InsufficientScope,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
)
from ..http.context import (
    ADMIN_KEY,
    ADMIN_PREFIX,
    API_KEY,
    AUTH,
    PROTECTED_PREFIX,
    AdminKeyRecord,
    ApiKeyRecord,
    AuthContext,
)
from ..http.spec import required_scope
from ..http.steps import Step
from ..ratelimit.base import BucketPolicy, Decision, RateLimiter, RateLimiterUnavailable
from ..telemetry.metrics import count_ratelimit_decision
from ..timeutil import utcnow
from .repository import LAST_USED_EVERY, AccountRepository

log = logging.getLogger(__name__)
CACHE_MAX_ENTRIES = 10_000
CHATBOT_CACHE_SECONDS = 60.0
# A digest no active key has: secrets are random, so no key is issued with it later.
BAD_KEY_CACHE_SECONDS = 60.0
FAILURE_BUCKET_PREFIX = "authfail:"
# What a route answering only 405 needs (authorize): no scope.
ANY_SCOPE = "*"
# A look-up of a key: (whether the store was asked, the active key it found).
_Lookup = tuple[bool, ApiKeyRecord | None]


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

    def drop(self, key: str) -> None:
        self._items.pop(key, None)

    def drop_where(self, unwanted: Callable[[V], bool]) -> None:
        for key in [k for k, (_, value) in self._items.items() if unwanted(value)]:
            del self._items[key]

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
        cache_entries: int = CACHE_MAX_ENTRIES,
    ) -> None:
        self._accounts = accounts
        self._keys: _TtlCache[ApiKeyRecord] = _TtlCache(key_cache_seconds, cache_entries)
        self._admin_keys: _TtlCache[AdminKeyRecord] = _TtlCache(key_cache_seconds, cache_entries)
        # When this process last wrote each key's lastUsedAt (monotonic), and the writes.
        self._used: dict[str, float] = {}
        self._use_writes: set[asyncio.Task[None]] = set()
        self._bad_keys: _TtlCache[bool] = _TtlCache(BAD_KEY_CACHE_SECONDS, cache_entries)
        self._key_lookups: dict[str, asyncio.Future[_Lookup]] = {}
        chatbot_seconds = min(CHATBOT_CACHE_SECONDS, max(key_cache_seconds, 1.0))
        self._chatbots: _TtlCache[str] = _TtlCache(chatbot_seconds, cache_entries)
        self._absent_chatbots: _TtlCache[bool] = _TtlCache(chatbot_seconds, cache_entries)
        self._limiter = limiter
        self._failure_policy = failure_policy
        self._proxies = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]

    async def authenticate(self, request: web.Request) -> ApiKeyRecord:
        """The request's active key; else Unauthorized, or RateLimited once its client
        address has failed too often."""
        digest = _digest(request.headers.get("Authorization", ""))
        if digest is not None:
            key = self._keys.get(digest)
            if key is not None:
                if not key.expired():  # checked on every request: exact to the second
                    self._note_use(key)
                    return key
                self._bad_keys.put(digest, True)
            if self._bad_keys.get(digest) is None:
                key = await self._look_up(request, digest)
                if key is not None:
                    self._note_use(key)
                    return key
                raise Unauthorized()  # the look-up spent the failure's token
        count_ratelimit_decision("auth_failure", await self._take_failure_token(request))
        raise Unauthorized()

    async def authenticate_admin(self, request: web.Request) -> AdminKeyRecord:
        """The request's active admin key; else Unauthorized (a workspace key too), or
        RateLimited once its client address has failed too often."""
        scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
        secret = secret.strip()
        if scheme.lower() == "bearer" and ids.is_admin_secret(secret):
            digest = ids.secret_digest(secret)
            cached = self._admin_keys.get(digest)
            if cached is not None:
                return cached
            if self._bad_keys.get(digest) is None:
                decision = await self._take_failure_token(request)
                try:
                    found = await self._accounts.admin_key_by_digest(digest=digest)
                except Exception:
                    await self._give_back_failure_token(request)
                    raise
                if found is not None and found.revoked_at is None:
                    self._admin_keys.put(digest, found)
                    await self._give_back_failure_token(request)
                    return found
                self._bad_keys.put(digest, True)
                count_ratelimit_decision("auth_failure", decision)
                raise Unauthorized()
        count_ratelimit_decision("auth_failure", await self._take_failure_token(request))
        raise Unauthorized()

    def forget_key(self, key_id: str) -> None:
        """This process stops using what it cached of the key (revoked, changed, rolled):
        its next request looks it up. Other processes do within the key cache time."""
        self._keys.drop_where(lambda key: key.id == key_id)
        self._bad_keys.drop_where(lambda _: True)  # a secret refused before may work now

    def forget_workspace(self, workspace_id: str) -> None:
        self._keys.drop_where(lambda key: key.workspace_id == workspace_id)
        self._chatbots.drop_where(lambda workspace: workspace == workspace_id)

    def forget_chatbot(self, chatbot_id: str) -> None:
        """The chatbot is being deleted: refused here at once (a 404, as if absent)."""
        self._chatbots.drop(chatbot_id)
        self._absent_chatbots.put(chatbot_id, True)

    def _note_use(self, key: ApiKeyRecord) -> None:
        """Have the key's lastUsedAt written, at most once a minute from this process
        (and the store keeps it to once a minute from all of them), off the request."""
        now = time.monotonic()
        last = self._used.get(key.id)
        if last is not None and now - last < LAST_USED_EVERY.total_seconds():
            return
        if len(self._used) >= CACHE_MAX_ENTRIES:
            self._used.clear()
        self._used[key.id] = now
        task = asyncio.get_running_loop().create_task(self._write_use(key.id))
        self._use_writes.add(task)
        task.add_done_callback(self._use_writes.discard)

    async def _write_use(self, key_id: str) -> None:
        try:
            await self._accounts.note_key_used(key_id=key_id, at=utcnow())
        except Exception as exc:  # the store's trouble: the next minute's use writes it
            log.warning("lastUsedAt of %s not written: %s", key_id, exc)

    async def close(self) -> None:
        """Wait for the lastUsedAt writes under way."""
        if self._use_writes:
            await asyncio.gather(*self._use_writes, return_exceptions=True)

    async def authorize(
        self, key: ApiKeyRecord, chatbot_id: str | None, scope: str | None
    ) -> AuthContext:
        """The key on its route: it has the ``scope`` the route declared (none declared:
        refused), and the chatbot the route names is of its workspace and among its
        chatbots; a workspace-wide route (webhooks, privacy) needs a key not limited to
        chatbots (it would reach the others')."""
        if scope != ANY_SCOPE and (scope is None or scope not in key.scopes):
            raise InsufficientScope(details={"required": [scope] if scope else []})
        if chatbot_id is None:
            if key.chatbot_ids is not None and scope != ANY_SCOPE:
                raise InsufficientScope(
                    "This API key is limited to chatbots: it may not use the workspace-wide routes",
                    details={"required": [scope], "chatbotIds": "must not be limited"},
                )
            return AuthContext(key, "")
        if key.chatbot_ids is not None and chatbot_id not in key.chatbot_ids:
            raise ChatbotNotFound()  # as if it did not exist
        if await self._chatbot_workspace(chatbot_id) != key.workspace_id:
            raise ChatbotNotFound()
        return AuthContext(key, chatbot_id)

    async def _look_up(self, request: web.Request, digest: str) -> ApiKeyRecord | None:
        """The active key with this digest, from the store; None (its failure counted)
        when there is none.

        A token of the client address's failure bucket is taken before the store is asked
        (none left: RateLimited, and no store query) and given back if the key is good.
        Requests for one digest meanwhile share the look-up, and its token.
        """
        while (pending := self._key_lookups.get(digest)) is not None:
            asked, key = await asyncio.shield(pending)
            if asked:
                if key is None:
                    count_ratelimit_decision(
                        "auth_failure", await self._take_failure_token(request)
                    )
                return key
            # Its client was refused before the store was asked (or left): try for this one.
        pending = self._key_lookups[digest] = asyncio.get_running_loop().create_future()
        try:
            decision = await self._take_failure_token(request)
            try:
                found = await self._accounts.key_by_digest(digest=digest)
            except Exception as exc:  # the store's failure (a 503), not the client's
                pending.set_exception(exc)  # the same answer for those waiting
                pending.exception()  # and no complaint when none is
                await self._give_back_failure_token(request)
                raise
            key = found if found is not None and found.active else None
            if key is None:
                self._bad_keys.put(digest, True)
            else:
                self._keys.put(digest, key)
            pending.set_result((True, key))
        finally:
            del self._key_lookups[digest]
            if not pending.done():  # refused a token, or its client left: nothing asked
                pending.set_result((False, None))
        if key is None:
            count_ratelimit_decision("auth_failure", decision)
        else:
            await self._give_back_failure_token(request)
        return key

    async def _chatbot_workspace(self, chatbot_id: str) -> str | None:
        """The chatbot's workspace, None when there is no such chatbot.

        Absent chatbots are cached too, so that a 404 for a chatbot of another workspace
        and one for a chatbot that does not exist cost the same: the time of a 404 does
        not tell whether the id exists. Ids are random, so no chatbot is created under an
        id someone asked for before. A malformed id is never looked up, nor cached.
        """
        if not ids.is_id(ids.CHATBOT, chatbot_id):
            return None
        workspace = self._chatbots.get(chatbot_id)
        if workspace is not None or self._absent_chatbots.get(chatbot_id):
            return workspace
        workspace = await self._accounts.chatbot_workspace(chatbot_id=chatbot_id)
        if workspace is None:
            self._absent_chatbots.put(chatbot_id, True)
        else:
            self._chatbots.put(chatbot_id, workspace)
        return workspace

    async def _take_failure_token(self, request: web.Request) -> Decision:
        """A token of the client address's failure bucket: RateLimited when there is none,
        ServiceUnavailable when the limiter cannot be asked (both counted here; a token
        taken is counted by the caller, once it knows it was a failure)."""
        try:
            decision = await self._limiter.take(
                FAILURE_BUCKET_PREFIX + self.client_address(request), self._failure_policy
            )
        except RateLimiterUnavailable:
            count_ratelimit_decision("auth_failure", None)
            raise ServiceUnavailable("Rate limiting is unavailable; retry shortly") from None
        if not decision.allowed:
            count_ratelimit_decision("auth_failure", decision)
            raise RateLimited(
                "Too many failed authentication attempts",
                headers={"Retry-After": str(decision.retry_after)},
            )
        return decision

    async def _give_back_failure_token(self, request: web.Request) -> None:
        """Return the token a look-up took for a key that turned out good."""
        bucket = FAILURE_BUCKET_PREFIX + self.client_address(request)
        try:
            await self._limiter.take(bucket, self._failure_policy, -1)
        except RateLimiterUnavailable:
            pass  # the limiter is out of reach: nothing to give back to

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


def _digest(header: str) -> str | None:
    """The digest of a Bearer secret (caches and the store are keyed by it), or None when
    the header holds no well-formed one."""
    scheme, _, secret = header.partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not ids.is_secret(secret):
        return None
    return ids.secret_digest(secret)


authenticator_key = web.AppKey("authenticator", Authenticator)


def key_step(authenticator_key: web.AppKey[Authenticator]) -> Step:
    """Finds the request's key on the protected routes (API_KEY; ADMIN_KEY on the admin
    API's): else 401, or 429."""

    async def find_key(request: web.Request) -> None:
        info = request.match_info
        if info.http_exception is not None or not request.path.startswith(PROTECTED_PREFIX):
            return
        authenticator = request.app[authenticator_key]
        if request.path.startswith(ADMIN_PREFIX):  # admin keys only, and only here
            request[ADMIN_KEY] = await authenticator.authenticate_admin(request)
        else:
            request[API_KEY] = await authenticator.authenticate(request)

    return find_key


def chatbot_step(authenticator_key: web.AppKey[Authenticator]) -> Step:
    """Checks the chatbot the route names against the request's key and sets AUTH; after
    the rate limit, so that a 404 spends a token and carries the key's headers."""

    async def check_chatbot(request: web.Request) -> None:
        key = request.get(API_KEY)
        if key is None:
            return
        info = request.match_info
        # A path's other methods (a "*" route): its handler answers 405, needing no scope.
        scope = ANY_SCOPE if info.route.method == "*" else required_scope(info.handler)
        request[AUTH] = await request.app[authenticator_key].authorize(
            key, info.get("chatbotId"), scope
        )

    return check_chatbot
