"""The shared resources that create_app builds from settings, under one typed key each.

A key whose type belongs to a layer above these stays beside its code, so that this
module imports only downward: ``api.query.cursor_codec_key``,
``middleware.auth.authenticator_key``, ``ops.state.ops_state_key``.
"""

from __future__ import annotations

from aiohttp import web

from .ratelimit.base import RateLimiter
from .settings import Settings
from .storage.accounts import AccountRepository
from .storage.client import Mongo
from .storage.events import EventLog, EventSignal
from .storage.idempotency import IdempotencyStore
from .storage.leads import LeadRepository
from .storage.webhooks import WebhookRepository

settings_key = web.AppKey("settings", Settings)
leads_repo_key = web.AppKey("leads_repo", LeadRepository)
accounts_repo_key = web.AppKey("accounts_repo", AccountRepository)
rate_limiter_key = web.AppKey("rate_limiter", RateLimiter)
mongo_key = web.AppKey("mongo", Mongo)
webhooks_repo_key = web.AppKey("webhooks_repo", WebhookRepository)
event_log_key = web.AppKey("event_log", EventLog)
# Notified by this process's lead writes; wakes its webhook dispatcher.
events_committed_key = web.AppKey("events_committed", EventSignal)
idempotency_key = web.AppKey("idempotency", IdempotencyStore)
