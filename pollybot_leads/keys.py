"""Every shared resource of the application, under one typed key each."""

from __future__ import annotations

from aiohttp import web

from .api.query import CursorCodec
from .middleware.auth import Authenticator
from .ops.state import OpsState
from .ratelimit.base import RateLimiter
from .settings import Settings
from .storage.accounts import AccountRepository
from .storage.client import Mongo
from .storage.idempotency import IdempotencyStore
from .storage.leads import LeadRepository

settings_key = web.AppKey("settings", Settings)
leads_repo_key = web.AppKey("leads_repo", LeadRepository)
accounts_repo_key = web.AppKey("accounts_repo", AccountRepository)
authenticator_key = web.AppKey("authenticator", Authenticator)
rate_limiter_key = web.AppKey("rate_limiter", RateLimiter)
cursor_codec_key = web.AppKey("cursor_codec", CursorCodec)
mongo_key = web.AppKey("mongo", Mongo)
ops_state_key = web.AppKey("ops_state", OpsState)
idempotency_key = web.AppKey("idempotency", IdempotencyStore)
