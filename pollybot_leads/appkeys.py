"""The shared resources that create_app builds from settings, under one typed key each.

A feature's own resources have their key beside their code (``leads.repository``,
``accounts.repository``, ``webhooks.repository``, ``idempotency.records``, and
``leads.query.cursor_codec_key``, ``accounts.auth.authenticator_key``,
``ops.state.ops_state_key``), so that this module imports only downward.
"""

from __future__ import annotations

from aiohttp import web

from .ratelimit.base import RateLimiter
from .settings import Settings
from .store.client import Mongo

settings_key = web.AppKey("settings", Settings)
rate_limiter_key = web.AppKey("rate_limiter", RateLimiter)
mongo_key = web.AppKey("mongo", Mongo)
