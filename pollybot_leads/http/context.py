"""The per-request values the middlewares share with handlers, under typed keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from aiohttp import web

from ..timeutil import utcnow

# What a key may do (contract v1.2, "API keys: scopes, chatbots, expiry"); each route
# declares the one it needs (http/spec.py, Operation.scope).
SCOPES = ("leads:read", "leads:write", "webhooks:read", "webhooks:write", "privacy:write")
# What the admin API's routes declare instead: they need an admin key (and nothing else
# does: a workspace key there, or an admin key anywhere else, is a 401).
ADMIN_SCOPE = "admin"


@dataclass(frozen=True)
class ApiKeyRecord:
    """An API key as authentication found it (accounts/repository.py stores them).

    ``scopes``: what it may do (a key made without any, and every key made before
    scopes existed, has them all); ``chatbot_ids``: the only chatbots it may touch (None:
    every chatbot of its workspace); ``expires_at``: when it stops working (None: never).
    """

    id: str
    workspace_id: str
    name: str | None
    created_at: datetime
    revoked_at: datetime | None
    rate_limit_capacity: int | None = None
    rate_limit_refill: float | None = None
    scopes: frozenset[str] = frozenset(SCOPES)
    chatbot_ids: frozenset[str] | None = None
    expires_at: datetime | None = None
    last_used_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None and not self.expired()

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or utcnow())


@dataclass(frozen=True)
class AuthContext:
    """The checked key and chatbot, once authentication has passed."""

    key: ApiKeyRecord
    chatbot_id: str  # "" on workspace-wide routes (no {chatbotId} in the path: webhooks)

    @property
    def workspace_id(self) -> str:
        return self.key.workspace_id


@dataclass(frozen=True)
class AdminKeyRecord:
    """A key of the platform running the service: it works only on the admin API."""

    id: str
    name: str
    created_at: datetime
    revoked_at: datetime | None


# Every route under it needs an API key (accounts/auth.py) and is documented (spec.py);
# those under ADMIN_PREFIX need an admin key instead.
PROTECTED_PREFIX = "/api/v1/"
ADMIN_PREFIX = "/api/v1/admin/"

REQUEST_ID = web.RequestKey("request_id", str)
# Headers added to whatever response goes out (rate-limit headers).
RESPONSE_HEADERS = web.RequestKey("response_headers", dict[str, str])
# The request's key, once found (before the chatbot it names is checked and AUTH is set).
API_KEY = web.RequestKey("api_key", ApiKeyRecord)
AUTH = web.RequestKey("auth", AuthContext)
ADMIN_KEY = web.RequestKey("admin_key", AdminKeyRecord)
