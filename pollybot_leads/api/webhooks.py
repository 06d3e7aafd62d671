"""Webhook endpoints of the key's workspace: create, list, read, change, delete, rotate
the secret, read the delivery log, replay events."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp_apispec import docs, json_schema, querystring_schema, response_schema

from .. import keys
from ..domain.timeutil import format_ts, utcnow
from ..errors import ValidationFailed
from ..middleware.context import AUTH
from ..webhooks.targets import target_problem
from .body import load_body
from .events import load_query
from .query import CONFIRM_HEADER, reject_query, require_confirmation
from .responses import ErrorEnvelopeSchema, ok
from .spec import CONFIRM_PARAMETER, error_responses
from .webhook_schemas import (
    AttemptListEnvelopeSchema,
    AttemptQuerySchema,
    ReplayEnvelopeSchema,
    ReplaySchema,
    WebhookCreateSchema,
    WebhookDeleteEnvelopeSchema,
    WebhookEnvelopeSchema,
    WebhookListEnvelopeSchema,
    WebhookSecretEnvelopeSchema,
    WebhookUpdateSchema,
)

_create_schema = WebhookCreateSchema()
_update_schema = WebhookUpdateSchema()
_replay_schema = ReplaySchema()
_attempt_query = AttemptQuerySchema()
BASE = "/api/v1/webhooks"
_NOT_FOUND = {
    404: {
        "description": "No such webhook endpoint in the key's workspace",
        "schema": ErrorEnvelopeSchema,
    }
}
FIELDS = {"url": "url", "events": "events", "chatbot_ids": "chatbotIds", "enabled": "enabled"}


def _webhooks(request: web.Request) -> Any:
    return request.app[keys.webhooks_repo_key]


def webhook_json(endpoint: dict[str, Any], secret: str | None = None) -> dict[str, Any]:
    out = dict(endpoint)
    for field in ("createdAt", "updatedAt", "previousSecretExpiresAt"):
        out[field] = format_ts(out[field]) if out[field] is not None else None
    if secret is not None:
        out["secret"] = secret
    return out


def attempt_json(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": doc["_id"],
        "eventId": doc["eventId"],
        "eventType": doc["eventType"],
        "chatbotId": doc["chatbotId"],
        "sequence": doc["sequence"],
        "attempt": doc["attempt"],
        "at": format_ts(doc["at"]),
        "statusCode": doc.get("statusCode"),
        "error": doc.get("error"),
        "durationMs": doc["durationMs"],
        "outcome": doc["outcome"],
        "nextAttemptAt": format_ts(doc["nextAttemptAt"]) if doc.get("nextAttemptAt") else None,
    }


async def check_url(request: web.Request, url: str) -> None:
    """The configuration's rules for an endpoint URL: scheme, then the host's addresses."""
    settings = request.app[keys.settings_key]
    problem = await target_problem(
        url, allow_http=settings.webhook_allow_http, allow_private=settings.webhook_allow_private
    )
    if problem:
        raise ValidationFailed(details={"url": [problem]})


def _changes(fields: dict[str, Any]) -> dict[str, Any]:
    """Loaded fields under their stored names (camelCase)."""
    return {FIELDS.get(name, name): value for name, value in fields.items()}


_CREATE_EXAMPLE = {
    "url": "https://example.com/hooks/pollybot",
    "events": ["lead.created", "lead.updated", "lead.deleted"],
    "description": "CRM sync",
}


@docs(
    tags=["webhooks"],
    operationId="createWebhook",
    summary="Create a webhook endpoint",
    description="Subscribes a URL to the workspace's lead events. Responds 201 with the "
    "endpoint and its signing `secret`, which is shown only in this answer. Every "
    "delivery is a POST of the event JSON (the feed's item) signed per Standard Webhooks "
    "(`webhook-id`, `webhook-timestamp`, `webhook-signature`) and with PollyBot's "
    "`X-Webhook-Timestamp` and `X-Webhook-Signature`; a 2xx within 15 s is success, "
    "anything else is retried with backoff for 3 days. At most 50 endpoints per "
    "workspace (configurable). Takes no query parameters.",
    responses=error_responses(400, 401, 413, 415, 429, 503),
)
@json_schema(WebhookCreateSchema, example=_CREATE_EXAMPLE)
@response_schema(WebhookSecretEnvelopeSchema, 201, description="The endpoint and its secret")
async def create_webhook(request: web.Request) -> web.Response:
    reject_query(request.query)
    fields = await load_body(request, _create_schema)
    await check_url(request, fields["url"])
    endpoint, secret = await _webhooks(request).create(
        workspace_id=request[AUTH].workspace_id,
        url=fields["url"],
        events=fields["events"],
        chatbot_ids=fields["chatbot_ids"],
        description=fields["description"],
        enabled=fields["enabled"],
        limit=request.app[keys.settings_key].webhook_max_endpoints,
    )
    response = ok(webhook_json(endpoint, secret), status=201)
    response.headers["Location"] = str(
        request.app.router["webhook"].url_for(webhookId=endpoint["id"])
    )
    return response


@docs(
    tags=["webhooks"],
    operationId="listWebhooks",
    summary="List webhook endpoints",
    description="Every endpoint of the key's workspace, oldest first (never their "
    "secrets). Takes no query parameters.",
    responses=error_responses(400, 401, 429, 503),
)
@response_schema(WebhookListEnvelopeSchema, 200, description="The endpoints")
async def list_webhooks(request: web.Request) -> web.Response:
    reject_query(request.query)
    found = await _webhooks(request).list(workspace_id=request[AUTH].workspace_id)
    return ok({"webhooks": [webhook_json(e) for e in found]})


@docs(
    tags=["webhooks"],
    operationId="getWebhook",
    summary="Get a webhook endpoint",
    description="One endpoint (without its secret). Another workspace's endpoint, or a "
    "malformed id, is a 404. Takes no query parameters.",
    responses={**error_responses(400, 401, 429, 503), **_NOT_FOUND},
)
@response_schema(WebhookEnvelopeSchema, 200, description="The endpoint")
async def get_webhook(request: web.Request) -> web.Response:
    reject_query(request.query)
    endpoint = await _webhooks(request).get(
        workspace_id=request[AUTH].workspace_id, webhook_id=request.match_info["webhookId"]
    )
    return ok(webhook_json(endpoint))


@docs(
    tags=["webhooks"],
    operationId="updateWebhook",
    summary="Change a webhook endpoint",
    description="Partial update of url, events, chatbotIds, enabled and description: "
    "only the fields sent change, at least one must be sent. `enabled: false` holds "
    "deliveries; `enabled: true` sends the held ones (also after a 410 disabled the "
    "endpoint). Events committed while it was disabled are not queued for it: replay "
    "them. Takes no query parameters.",
    responses={**error_responses(400, 401, 413, 415, 429, 503), **_NOT_FOUND},
)
@json_schema(WebhookUpdateSchema, example={"enabled": True, "events": ["lead.created"]})
@response_schema(WebhookEnvelopeSchema, 200, description="The whole endpoint, changed")
async def update_webhook(request: web.Request) -> web.Response:
    reject_query(request.query)
    fields = await load_body(request, _update_schema)
    if not fields:
        raise ValidationFailed("No fields to update")
    if "url" in fields:
        await check_url(request, fields["url"])
    endpoint = await _webhooks(request).update(
        workspace_id=request[AUTH].workspace_id,
        webhook_id=request.match_info["webhookId"],
        changes=_changes(fields),
    )
    return ok(webhook_json(endpoint))


@docs(
    tags=["webhooks"],
    operationId="deleteWebhook",
    summary="Delete a webhook endpoint",
    description="Permanent, with its queued deliveries and delivery log, so it must be "
    "confirmed like a lead's delete: `?confirm=true`, or the header `X-Confirm-Delete: "
    "true`; otherwise 400 `CONFIRMATION_REQUIRED` and nothing changes.",
    parameters=[CONFIRM_PARAMETER],
    responses={**error_responses(400, 401, 429, 503), **_NOT_FOUND},
)
@response_schema(WebhookDeleteEnvelopeSchema, 200, description="The endpoint is gone")
async def delete_webhook(request: web.Request) -> web.Response:
    require_confirmation(request.query, request.headers.get(CONFIRM_HEADER))
    webhook_id = request.match_info["webhookId"]
    await _webhooks(request).delete(workspace_id=request[AUTH].workspace_id, webhook_id=webhook_id)
    return ok(
        {"id": webhook_id, "deletedAt": format_ts(utcnow())},
        message="Webhook deleted successfully",
    )


@docs(
    tags=["webhooks"],
    operationId="rotateWebhookSecret",
    summary="Rotate the signing secret",
    description="Issues a new secret, shown only in this answer. The previous one keeps "
    "signing too for 24 hours (`previousSecretExpiresAt`): meanwhile each delivery "
    "carries one signature per secret, so a receiver can switch at its own pace. Takes "
    "no query parameters and no body.",
    responses={**error_responses(400, 401, 429, 503), **_NOT_FOUND},
)
@response_schema(WebhookSecretEnvelopeSchema, 200, description="The endpoint and its new secret")
async def rotate_secret(request: web.Request) -> web.Response:
    reject_query(request.query)
    endpoint, secret = await _webhooks(request).rotate_secret(
        workspace_id=request[AUTH].workspace_id, webhook_id=request.match_info["webhookId"]
    )
    return ok(webhook_json(endpoint, secret))


@docs(
    tags=["webhooks"],
    operationId="listWebhookDeliveries",
    summary="Read the delivery log",
    description="Every delivery attempt to this endpoint, newest first (kept 30 days): "
    "the event, when it was sent, the receiver's status code or the error, the duration, "
    "and when the next attempt is due. Page with `before` (the previous page's "
    "`pagination.nextBefore`).",
    responses={**error_responses(400, 401, 429, 503), **_NOT_FOUND},
)
@querystring_schema(AttemptQuerySchema)
@response_schema(AttemptListEnvelopeSchema, 200, description="A page of attempts")
async def list_deliveries(request: web.Request) -> web.Response:
    query = load_query(request.query, _attempt_query)
    found, more = await _webhooks(request).attempts(
        workspace_id=request[AUTH].workspace_id,
        webhook_id=request.match_info["webhookId"],
        before=query.get("before"),
        limit=query["limit"],
    )
    return ok(
        {
            "deliveries": [attempt_json(doc) for doc in found],
            "pagination": {
                "limit": query["limit"],
                "hasMore": more,
                "nextBefore": found[-1]["_id"] if more else None,
            },
        }
    )


@docs(
    tags=["webhooks"],
    operationId="replayWebhook",
    summary="Replay events",
    description="Queues again, for this endpoint, every event after `after` of each of "
    "its chatbots (every chatbot of the workspace when it names none) that it "
    "subscribes to: also events delivered before, and events committed while it was "
    "disabled. The queueing runs in the background (202); deliveries follow in sequence "
    "order per chatbot as far as retries allow. Takes no query parameters.",
    responses={**error_responses(400, 401, 413, 415, 429, 503), **_NOT_FOUND},
)
@json_schema(ReplaySchema, example={"after": 0})
@response_schema(ReplayEnvelopeSchema, 202, description="The replay is queued")
async def replay(request: web.Request) -> web.Response:
    reject_query(request.query)
    fields = await load_body(request, _replay_schema)
    webhook_id = request.match_info["webhookId"]
    chatbots = await _webhooks(request).request_replay(
        workspace_id=request[AUTH].workspace_id, webhook_id=webhook_id, after=fields["after"]
    )
    return ok(
        {"webhookId": webhook_id, "after": fields["after"], "chatbotIds": chatbots}, status=202
    )


def add_webhook_routes(app: web.Application) -> None:
    one = BASE + "/{webhookId}"
    app.router.add_post(BASE, create_webhook)
    app.router.add_get(BASE, list_webhooks, allow_head=False)
    app.router.add_get(one, get_webhook, name="webhook", allow_head=False)
    app.router.add_put(one, update_webhook)
    app.router.add_delete(one, delete_webhook)
    app.router.add_post(one + "/rotate-secret", rotate_secret)
    app.router.add_get(one + "/deliveries", list_deliveries, allow_head=False)
    app.router.add_post(one + "/replay", replay)
