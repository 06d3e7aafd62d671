"""create_app(settings): the only way to build the application. No I/O happens here."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator

from aiohttp import web

from . import appkeys
from .accounts.auth import (
    Authenticator,
    authenticator_key,
    chatbot_step,
    key_step,
)
from .accounts.repository import AccountRepository, accounts_repo_key
from .admin.audit import AuditTrail
from .admin.deletion import DeletionJobs, grace_seconds, running_deletions
from .admin.routes import add_admin_routes, admin_service_key
from .admin.service import AdminService
from .http.activity import RequestActivity, request_activity_key
from .http.admission import Admission
from .http.cors import CorsPolicy
from .http.deadline import deadline_middleware_factory
from .http.docs import redirect_to_docs, setup_docs
from .http.front import front_middleware_factory
from .http.ratelimit import ratelimit_step
from .http.request_id import add_response_headers
from .http.steps import Step, steps_middleware
from .idempotency.middleware import idempotency_middleware_factory
from .idempotency.records import idempotency_key
from .indexes import ensure_all_indexes
from .leads.batch import BATCH_MAX_BYTES, add_batch_route
from .leads.event_log import EventLog, EventSignal, event_log_key, events_committed_key
from .leads.export_routes import add_export_route
from .leads.merge_routes import add_merge_routes
from .leads.query import CursorCodec, cursor_codec_key
from .leads.repository import LeadRepository, leads_repo_key
from .leads.routes import add_routes
from .ops.endpoints import setup_ops
from .privacy.routes import add_privacy_routes
from .ratelimit.base import BucketPolicy, RateLimiter
from .settings import Settings
from .store.client import Mongo
from .telemetry.metrics import CountingRateLimiter
from .webhooks.delivery import running_worker
from .webhooks.feed_routes import add_event_routes
from .webhooks.repository import WebhookRepository, webhooks_repo_key
from .webhooks.routes import add_webhook_routes

log = logging.getLogger(__name__)


def build_rate_limiter(settings: Settings) -> RateLimiter:
    if settings.redis_url:
        from .ratelimit.redis_bucket import RedisTokenBucket

        return RedisTokenBucket.from_settings(settings)
    from .ratelimit.memory import InProcessTokenBucket

    return InProcessTokenBucket()


async def _mongo_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[appkeys.settings_key]
    mongo = Mongo.from_settings(settings)
    try:
        await mongo.connect()
        await ensure_all_indexes(mongo, settings)
        committed = EventSignal()
        leads = LeadRepository(
            mongo,
            max_count=settings.list_max_count,
            committed=committed,
            suppression_secret=settings.suppression_secret,
            region_ttl=settings.key_cache_seconds,
        )
        await leads.migrate_counters(mongo.db["chatbots"])
        await leads.coarsen_name_bounds()
        await leads.fill_phone_keys()
        app[leads_repo_key] = leads
        app[appkeys.mongo_key] = mongo
        app[accounts_repo_key] = AccountRepository(mongo)
        app[idempotency_key] = leads.idempotency
        app[webhooks_repo_key] = WebhookRepository(mongo)
        app[event_log_key] = EventLog(mongo.db, mongo.quirks)
        app[events_committed_key] = committed
        async with mongo.sessions.kept():
            yield
    finally:
        await mongo.close()


async def _ratelimit_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[appkeys.settings_key]
    inner = build_rate_limiter(settings)
    limiter = CountingRateLimiter(inner)
    app[appkeys.rate_limiter_key] = limiter
    app[authenticator_key] = Authenticator(
        app[accounts_repo_key],
        key_cache_seconds=settings.key_cache_seconds,
        limiter=inner,  # it counts its decisions itself (some of its tokens are given back)
        failure_policy=BucketPolicy(
            settings.auth_failure_capacity, settings.auth_failure_refill_per_second
        ),
        trusted_proxies=settings.trusted_proxies,
    )
    try:
        yield
    finally:
        await app[authenticator_key].close()
        await limiter.close()


async def _admin_ctx(app: web.Application) -> AsyncIterator[None]:
    """The admin API's service, and deletion jobs run in the background."""
    settings, mongo = app[appkeys.settings_key], app[appkeys.mongo_key]
    jobs = DeletionJobs(
        mongo, grace_seconds=grace_seconds(settings), busy=app[request_activity_key].busy
    )
    app[admin_service_key] = AdminService(
        app[accounts_repo_key], app[leads_repo_key], AuditTrail(mongo), jobs, app[authenticator_key]
    )
    async with running_deletions(jobs):
        yield


async def _webhooks_ctx(app: web.Application) -> AsyncIterator[None]:
    """Webhook deliveries in the background (off: webhooks.deliver = false)."""
    settings = app[appkeys.settings_key]
    if not settings.webhooks_deliver:
        yield
        return
    async with running_worker(
        app[appkeys.mongo_key],
        settings,
        app[events_committed_key],
        busy=app[request_activity_key].busy,
    ):
        yield


def create_app(settings: Settings) -> web.Application:
    cors = CorsPolicy(settings.cors_origins) if settings.cors_origins else None
    # What the in-process webhook delivery and deletion jobs give way to.
    activity = RequestActivity()
    admission = Admission(
        read_limit=settings.store_read_concurrency,
        write_limit=settings.store_write_concurrency,
        max_wait=settings.store_max_queue_ms / 1000,
        budget=settings.mongodb_timeout_ms / 1000,
    )
    middlewares = [
        front_middleware_factory(activity),
        *([cors.middleware()] if cors else []),  # preflights: before auth, no tokens
        deadline_middleware_factory(settings.mongodb_timeout_ms / 1000, appkeys.mongo_key),
        # Before authentication: finding a key or a chatbot not yet cached is store work.
        admission.middleware(),
    ]
    # The key, its token, its chatbot: one layer (http/steps.py), in this order.
    guard: list[Step] = [key_step(authenticator_key)]
    if settings.ratelimit_enabled:
        guard.append(
            ratelimit_step(
                appkeys.rate_limiter_key,
                BucketPolicy(settings.ratelimit_capacity, settings.ratelimit_refill_per_second),
            )
        )
    # After the key's token is taken: a request for a chatbot the key does not have is
    # limited like any other, and its 404 carries the key's headers.
    guard.append(chatbot_step(authenticator_key))
    middlewares.append(steps_middleware(*guard))
    middlewares.append(idempotency_middleware_factory(idempotency_key))
    # Each route enforces its own body limit (read_json_object); the batch route's is
    # the largest.
    app = web.Application(
        client_max_size=max(settings.max_body_bytes, BATCH_MAX_BYTES), middlewares=middlewares
    )
    app[appkeys.settings_key] = settings
    app[request_activity_key] = activity
    secret = settings.cursor_secret
    if not secret:
        log.warning("CURSOR_SECRET is not set: list cursors only work within this process")
        secret = secrets.token_urlsafe(32)
    app[cursor_codec_key] = CursorCodec(secret.encode())
    app.cleanup_ctx.append(_mongo_ctx)
    app.cleanup_ctx.append(_ratelimit_ctx)
    app.cleanup_ctx.append(_admin_ctx)
    app.cleanup_ctx.append(_webhooks_ctx)
    app.on_response_prepare.append(add_response_headers)  # with the security headers
    if cors is not None:
        app.on_response_prepare.append(cors.add_headers)
    add_batch_route(app)
    add_export_route(app)  # before the lead routes, which would take it for a lead id
    add_routes(app)
    add_merge_routes(app)
    add_event_routes(app)
    add_webhook_routes(app)
    add_privacy_routes(app)
    add_admin_routes(app)
    setup_docs(app)
    app.router.add_get("/", redirect_to_docs)
    setup_ops(app)  # /healthz, /readyz, /metrics: outside /api/v1/, so no key, no tokens
    return app
