"""What the sync and async clients share: how a call is prepared, when it is retried
and how an answer becomes data or a typed error. Only sending differs between them."""

from __future__ import annotations

import random
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from .errors import BY_STATUS, APIConnectionError, APIError, APITimeoutError, RateLimitError

__version__ = "0.1.0"
USER_AGENT = f"pollybot-leads-client/{__version__}"
# A write carries one Idempotency-Key for all its tries: a retry never writes twice.
WRITE_METHODS = frozenset({"POST", "PUT", "DELETE", "PATCH"})
# Answers worth another try: rate limited, the service briefly unavailable, and a
# request with the same Idempotency-Key still running.
RETRIED_STATUSES = frozenset({429, 503})
BACKOFF_BASE, BACKOFF_MAX = 0.5, 8.0
# A key found still running (409 IDEMPOTENCY_IN_PROGRESS) is asked again every
# Retry-After for this long from the call's first try, beyond max_retries: the server
# holds a key for at most 10 s after a request that failed without freeing it, so the
# call then gets the kept result or runs, rather than an error about its own retry.
IN_PROGRESS_PATIENCE = 15.0


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    # A write the server keeps no Idempotency-Key for (the admin API's creates and key
    # rolls): tried again only when it surely was not applied, i.e. refused by the rate
    # limit (429) or never sent (no connection).
    once: bool = False


class Core:
    def __init__(self, api_key: str, base_url: str, max_retries: int, timeout: float) -> None:
        if not api_key:
            raise ValueError("api_key is required")
        self.api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.max_retries = max(0, max_retries)
        self.timeout = timeout

    def headers(self, call: Call) -> dict[str, str]:
        """The call's headers, the same for every try of it (its Idempotency-Key too)."""
        headers = {
            "Authorization": f"Bearer {self.api_key}",
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
            **call.headers,
        }
        if call.method in WRITE_METHODS and not call.once and "Idempotency-Key" not in headers:
            headers["Idempotency-Key"] = str(uuid.uuid4())
        return headers

    def url(self, call: Call) -> str:
        return self.base_url + call.path

    def params(self, call: Call) -> dict[str, str] | None:
        if not call.params:
            return None
        return {k: _query_value(v) for k, v in call.params.items() if v is not None}

    def settle(
        self,
        call: Call,
        attempt: int,
        response: httpx.Response | None,
        failure: httpx.TransportError | None,
        elapsed: float = 0.0,
    ) -> httpx.Response | float:
        """After try ``attempt``, ``elapsed`` seconds after the call's first: its answer
        when it is the last (or the connection's error, raised), else the seconds to wait
        before the next."""
        delay: float | None = None
        if not call.once or (response is not None and response.status_code == 429):
            delay = self.retry_delay(attempt, response)
        elif failure is not None and isinstance(failure, UNSENT):
            delay = self.retry_delay(attempt, None)
        if delay is None and self.max_retries and response is not None and _in_progress(response):
            patient = self.retry_delay(0, response)
            if patient is not None and elapsed + patient <= IN_PROGRESS_PATIENCE:
                delay = patient
        if delay is not None:
            return delay
        if failure is not None:
            raise connection_failure(failure) from failure
        assert response is not None
        return response

    def retry_delay(self, attempt: int, response: httpx.Response | None) -> float | None:
        """Seconds to wait before try ``attempt + 1``, or None: do not retry. A response
        of None is a connection failure."""
        if attempt >= self.max_retries:
            return None
        if response is not None:
            if response.status_code not in RETRIED_STATUSES and not _in_progress(response):
                return None
            after = response.headers.get("Retry-After")
            if after is not None and after.isdigit():
                return min(float(after), 60.0)
        backoff: float = min(BACKOFF_MAX, BACKOFF_BASE * 2.0**attempt)
        return backoff * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not a secret


# Failures before the request went out: nothing can have been applied.
UNSENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def connection_failure(exc: httpx.TransportError) -> APIConnectionError:
    """httpx's failure to reach the server, as this client's error."""
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(str(exc) or "timed out")
    return APIConnectionError(str(exc) or type(exc).__name__)


def _in_progress(response: httpx.Response) -> bool:
    return response.status_code == 409 and _code(response) == "IDEMPOTENCY_IN_PROGRESS"


def _code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error.get("code") if isinstance(error, dict) else None


_SNAKE = re.compile(r"_([a-z0-9])")


def wire(fields: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments as the API's fields: ``external_id`` is ``externalId``, a
    ``datetime`` an ISO 8601 time in UTC; a key that is not a Python name (a metadata
    filter such as ``metadata.plan_tier``) is sent as given."""
    return {
        (_SNAKE.sub(lambda m: m.group(1).upper(), k) if k.isidentifier() else k): _wire_value(v)
        for k, v in fields.items()
    }


def _wire_value(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("give an aware datetime (with its time zone)")
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return value  # nested objects (metadata) go as given


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, datetime):
        return str(_wire_value(value))
    return str(value)


def data_of(response: httpx.Response) -> Any:
    """The envelope's ``data``, or the typed error it carries."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_success and isinstance(body, dict) and body.get("success") is True:
        return body.get("data")
    raise error_of(response, body)


def error_of(response: httpx.Response, body: Any) -> APIError:
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {"code": "UNEXPECTED_RESPONSE", "message": response.text[:200]}
    kind = BY_STATUS.get(response.status_code, APIError)
    args = (
        response.status_code,
        str(error.get("code")),
        str(error.get("message")),
        error.get("details"),
        error.get("requestId") or response.headers.get("X-Request-Id"),
    )
    if kind is RateLimitError:
        after = response.headers.get("Retry-After")
        return RateLimitError(*args, retry_after=float(after) if after else None)
    return kind(*args)
