"""The shared resources that create_app builds from settings, under one typed key each.

A key whose type belongs to a layer above these stays beside its code, so that this
module imports only downward: ``leads.query.cursor_codec_key``,
``accounts.auth.authenticator_key``, ``ops.state.ops_state_key``.
"""

from __future__ import annotations

from aiohttp import web

from .accounts.repository import AccountRepository
from .idempotency.records import IdempotencyStore
from .leads.repository import LeadRepository
from .ratelimit.base import RateLimiter
from .settings import Settings
from .store.client import Mongo
from .webhooks.event_log import EventLog, EventSignal
from .webhooks.repository import WebhookRepository

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
