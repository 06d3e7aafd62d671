"""A token bucket per key in Redis, shared by every server process.

One ``take`` is one round trip: ``EVALSHA`` of :data:`TAKE_SCRIPT`, which reads the Redis
server's own clock, refills, takes a token if there is one, writes the bucket back and sets
its expiry, atomically. The script's SHA1 is computed here; when Redis does not know it
(first use, restart, ``SCRIPT FLUSH``) the script is loaded with ``SCRIPT LOAD`` and the
call retried once: the only case with more than one round trip.

Each bucket is ONE hash key, ``<prefix><bucket>``, fields ``t`` (tokens, a float) and ``u``
(the Redis server time of the last take, in microseconds), so the script touches a single
key and runs unchanged on Redis Cluster. The key expires when the bucket would be full
again: a missing key *is* a full bucket, so idle buckets cost nothing.

When Redis cannot be asked (refused, timed out, any error reply other than ``NOSCRIPT``,
an unexpected reply), the failure policy decides:

* ``allow``: :func:`~pollybot_leads.ratelimit.memory.degraded_decision`, an allowed
  :class:`Decision` with ``degraded=True`` that describes a full bucket after one take;
* ``deny``: :class:`RedisRateLimiterUnavailable` (a :class:`RateLimiterUnavailable`),
  whose ``retry_after`` is the whole seconds until Redis is tried again.

After a failure Redis is left alone for ``backoff_seconds``: every ``take`` applies the
policy at once. Then one request probes Redis (others keep applying the policy until that
probe has answered); on success normal limiting resumes and one INFO line says so.
Failures are logged at WARNING at most once per ``log_interval_seconds``, with the number
of failures and of requests decided without Redis since the previous line.

``take`` never waits longer than ``timeout_ms`` (a hard deadline over the whole call,
besides the client's socket timeouts: a timer failing the reply's future when the client
hands it back, else ``asyncio.timeout_at``) and raises nothing but
:class:`RateLimiterUnavailable` (policy ``deny``) or ``ValueError`` (an invalid policy).

The client. Built from a URL (as :meth:`RedisTokenBucket.from_settings` does), the bucket
talks to Redis through the project's own client, one path for every kind of URL:
``redis://``, ``rediss://`` (TLS) and ``unix://`` get a
:class:`~pollybot_leads.ratelimit.resp.RespClient`, ``redis+cluster://`` and
``rediss+cluster://`` a :class:`~pollybot_leads.ratelimit.resp_cluster.ClusterClient`
(one RespClient per master, each take sent straight to the master of its bucket's slot).
Each RespClient keeps a small pool of pipelined connections (``pool_size``); a connection
that has left commands unanswered for ``timeout_ms`` is dropped by the next take, which
goes to another one, so a wedged connection never holds up later requests. Why not
redis-py: it costs several times the CPU per take (docs/benchmarks.md). A client passed
in (anything with ``evalsha``, ``script_load``, ``ping`` and ``aclose`` like these two)
is used as it is.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from pollybot_leads.ratelimit.base import BucketPolicy, Decision, RateLimiterUnavailable
from pollybot_leads.ratelimit.memory import check_policy, degraded_decision, make_decision
from pollybot_leads.ratelimit.resp import DEFAULT_POOL_SIZE, RespClient
from pollybot_leads.ratelimit.resp_cluster import ClusterClient, client_from_url
from pollybot_leads.ratelimit.resp_protocol import NoScriptError

__all__ = ["KEY_PREFIX", "TAKE_SCRIPT", "RedisRateLimiterUnavailable", "RedisTokenBucket"]

KEY_PREFIX = "pb:rl:"
FAILURE_POLICIES = ("allow", "deny")
DEFAULT_LOGGER = logging.getLogger("pollybot_leads.ratelimit")

# KEYS[1]: the bucket's hash. ARGV[1]: capacity (>= 1). ARGV[2]: refill, tokens/second (> 0).
# ARGV[3], optional: tokens to take (default 1; all or none; a negative number gives tokens
# back, never past the capacity).
# Returns {allowed (1 or 0), remaining whole tokens (floor), ms until full (>= 1),
#          ms until that many tokens (0 when they are there)}, all integers. Milliseconds are
# rounded up, ignoring float noise below 1e-6 ms (as memory.ms_until does).
TAKE_SCRIPT = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3]) or 1
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local state = redis.call('HMGET', KEYS[1], 't', 'u')
local tokens = tonumber(state[1])
local stamp = tonumber(state[2])
if tokens == nil or stamp == nil then
  tokens = capacity
else
  local elapsed = now - stamp
  if elapsed < 0 then elapsed = 0 end
  tokens = math.min(capacity, tokens + elapsed * rate / 1000000)
end
local allowed = 0
if tokens >= cost then
  tokens = math.min(capacity, tokens - cost)
  allowed = 1
end
local to_full = math.ceil((capacity - tokens) * 1000 / rate - 1e-6)
if to_full < 1 then to_full = 1 end
local to_one = 0
if tokens < cost then to_one = math.max(0, math.ceil((cost - tokens) * 1000 / rate - 1e-6)) end
redis.call('HSET', KEYS[1], 't', string.format('%.17g', tokens),
           'u', string.format('%.17g', now))
redis.call('PEXPIRE', KEYS[1], to_full)
return {allowed, math.floor(tokens), to_full, to_one}
"""
TAKE_SCRIPT_SHA = hashlib.sha1(TAKE_SCRIPT.encode(), usedforsecurity=False).hexdigest()


class RedisRateLimiterUnavailable(RateLimiterUnavailable):
    """Redis cannot be asked and the policy is ``deny``; retry after ``retry_after`` s."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _too_late(reply: asyncio.Future[Any]) -> None:
    if not reply.done():
        reply.set_exception(TimeoutError())


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


class RedisTokenBucket:
    """:class:`~pollybot_leads.ratelimit.base.RateLimiter` backed by Redis.

    ``redis`` is a URL (see :func:`~pollybot_leads.ratelimit.resp_url.parse_url`) or a client.
    From a URL the bucket builds its client (``pool_size`` connections per server,
    ``timeout_ms`` connect timeout and stall limit) and :meth:`close` closes it; a client
    passed in is used as it is and left open by :meth:`close` (the hard timeout still
    applies to it).
    """

    def __init__(
        self,
        redis: Any,
        *,
        timeout_ms: int = 100,
        failure_policy: str = "allow",
        backoff_seconds: float = 2.0,
        log_interval_seconds: float = 30.0,
        logger: logging.Logger | None = None,
        key_prefix: str = KEY_PREFIX,
        pool_size: int = DEFAULT_POOL_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_policy not in FAILURE_POLICIES:
            raise ValueError(f"failure_policy must be one of {FAILURE_POLICIES}")
        if timeout_ms <= 0:
            raise ValueError("timeout_ms must be positive")
        if backoff_seconds < 0 or log_interval_seconds < 0:
            raise ValueError("backoff_seconds and log_interval_seconds must not be negative")
        self._timeout = timeout_ms / 1000.0
        self._redis: Any
        if isinstance(redis, str):
            if not redis:
                raise ValueError("no Redis URL")
            self._redis = client_from_url(
                redis,
                connect_timeout=self._timeout,
                command_timeout=self._timeout,
                pool_size=pool_size,
            )
            self._owns_client = True
        else:
            self._redis = redis
            self._owns_client = False
        self._policy = failure_policy
        self._backoff = backoff_seconds
        self._log_interval = log_interval_seconds
        self._log = logger if logger is not None else DEFAULT_LOGGER
        self._prefix = key_prefix
        self._clock = clock
        self._sha = TAKE_SCRIPT_SHA
        self._closed = False

        # Failure state.
        self._failing = False  # the last attempt failed; not yet recovered
        self._down_since = 0.0
        self._backoff_until = 0.0
        self._probing = False  # one request is trying Redis again after the back-off
        self._last_warning: float | None = None
        self._failures_unreported = 0  # failures since the last WARNING line, not logged
        self._skipped_unreported = 0  # requests decided without Redis since that line
        self._outage_failures = 0
        self._outage_skipped = 0

    @classmethod
    def from_settings(
        cls, settings: Any, *, logger: logging.Logger | None = None
    ) -> RedisTokenBucket:
        """Build from :class:`~pollybot_leads.settings.Settings`; needs ``redis_url``."""
        if not settings.redis_url:
            raise ValueError("settings.redis_url is empty: use InProcessTokenBucket")
        return cls(
            settings.redis_url,
            timeout_ms=settings.redis_timeout_ms,
            failure_policy=settings.ratelimit_failure_policy,
            backoff_seconds=settings.ratelimit_failure_backoff_seconds,
            log_interval_seconds=settings.ratelimit_failure_log_interval_seconds,
            logger=logger,
        )

    @property
    def client(self) -> RespClient | ClusterClient | Any:
        """The client in use (a RespClient or a ClusterClient when built from a URL)."""
        return self._redis

    @property
    def failure_policy(self) -> str:
        return self._policy

    @property
    def available(self) -> bool:
        """False from a failure until Redis has answered again."""
        return not self._failing

    def key(self, bucket: str) -> str:
        """The Redis key holding ``bucket``."""
        return self._prefix + bucket

    async def take(self, bucket: str, policy: BucketPolicy, cost: int = 1) -> Decision:
        check_policy(policy)
        if self._failing and (self._probing or self._clock() < self._backoff_until):
            self._skipped_unreported += 1
            self._outage_skipped += 1
            return self._unavailable(policy, None)

        probe = self._failing
        if probe:
            self._probing = True
        try:
            allowed, remaining, ms_to_full, ms_to_one = await self._call(
                self._prefix + bucket, policy, cost
            )
        # Anything at all means Redis could not be asked. CancelledError is no Exception.
        except Exception as exc:
            self._failed(exc)
            return self._unavailable(policy, exc)
        finally:
            if probe:
                self._probing = False

        if self._failing:
            self._recovered()
        return make_decision(
            allowed=allowed == 1,
            capacity=policy.capacity,
            remaining=remaining,
            ms_to_full=ms_to_full,
            ms_to_one=ms_to_one,
        )

    async def _call(
        self, key: str, policy: BucketPolicy, cost: int = 1
    ) -> tuple[int, int, int, int]:
        if self._closed:
            raise RuntimeError("the rate limiter is closed")
        args: tuple[str | int, ...] = (key, policy.capacity, repr(float(policy.refill_per_second)))
        if cost != 1:
            args = (*args, cost)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        sent = self._redis.evalsha(self._sha, 1, *args)
        try:
            if isinstance(sent, asyncio.Future):  # the reply's own future (RespClient)
                # Failed by a timer at the deadline: asyncio.timeout's bookkeeping costs
                # more, on every request. The connection drops a reply come too late.
                timer = loop.call_at(deadline, _too_late, sent)
                try:
                    reply = await sent
                finally:
                    timer.cancel()
            else:
                async with asyncio.timeout_at(deadline):
                    reply = await sent
        except NoScriptError:
            async with asyncio.timeout_at(deadline):
                loaded = await self._redis.script_load(TAKE_SCRIPT)
                self._sha = loaded.decode() if isinstance(loaded, bytes) else str(loaded)
                reply = await self._redis.evalsha(self._sha, 1, *args)
        if not isinstance(reply, list) or len(reply) != 4:
            raise TypeError(f"unexpected reply from the rate-limit script: {reply!r}")
        allowed, remaining, ms_to_full, ms_to_one = reply
        return int(allowed), int(remaining), int(ms_to_full), int(ms_to_one)

    async def load_script(self) -> bool:
        """Load the script ahead of the first request (e.g. at start-up); True on success.

        Optional, and it never raises: a failure is handled as in :meth:`take`.
        """
        try:
            async with asyncio.timeout(self._timeout):
                loaded: str | bytes = await self._redis.script_load(TAKE_SCRIPT)
        except Exception as exc:
            self._failed(exc)
            return False
        self._sha = loaded.decode() if isinstance(loaded, bytes) else str(loaded)
        if self._failing:
            self._recovered()
        return True

    async def ping(self, timeout: float) -> bool:
        """True when Redis answers PING within ``timeout`` seconds; never raises."""
        if self._closed:
            return False
        try:
            async with asyncio.timeout(timeout):
                return bool(await self._redis.ping())
        except TimeoutError:
            self._log.warning("readiness: redis did not answer PING within %g s", timeout)
            return False
        except Exception as exc:  # refused, TLS or authentication failed...
            self._log.warning("readiness: redis PING failed: %r", exc)
            return False

    def _unavailable(self, policy: BucketPolicy, exc: BaseException | None) -> Decision:
        if self._policy == "allow":
            return degraded_decision(policy)
        wait = max(1, math.ceil(self._backoff_until - self._clock()))
        raise RedisRateLimiterUnavailable(
            "the rate limiter's Redis is unavailable", retry_after=wait
        ) from exc

    def _failed(self, exc: BaseException) -> None:
        now = self._clock()
        if not self._failing:
            self._failing = True
            self._down_since = now
            self._outage_failures = 0
            self._outage_skipped = 0
        self._outage_failures += 1
        self._backoff_until = now + self._backoff
        if self._last_warning is not None and now - self._last_warning < self._log_interval:
            self._failures_unreported += 1
            return
        if isinstance(exc, TimeoutError):
            reason = f"no answer within {self._timeout * 1000:.0f} ms"
        else:
            reason = _describe(exc)
        self._log.warning(
            "rate limiter: Redis unavailable (%s); failure policy %r, Redis left alone for "
            "%.3g s; %d more failures and %d requests decided without Redis since the "
            "previous report",
            reason,
            self._policy,
            self._backoff,
            self._failures_unreported,
            self._skipped_unreported,
        )
        self._last_warning = now
        self._failures_unreported = 0
        self._skipped_unreported = 0

    def _recovered(self) -> None:
        self._failing = False
        self._log.info(
            "rate limiter: Redis reachable again after %.1f s (%d failures, %d requests "
            "decided without Redis)",
            self._clock() - self._down_since,
            self._outage_failures,
            self._outage_skipped,
        )

    async def close(self) -> None:
        """Close the client if this bucket created it (from a URL); idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            await self._redis.aclose()
