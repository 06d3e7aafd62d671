"""Webhook endpoints of the key's workspace: create, list, read, change, delete, rotate
the secret, read the delivery log, replay events."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import appkeys
from ..errors import ConfirmationRequired, ValidationFailed, WebhookNotFound
from ..http.body import load_body, load_query
from ..http.context import AUTH
from ..http.responses import ok
from ..http.spec import (
    BODY_ERRORS,
    CONFIRM_PARAMETER,
    IDEMPOTENCY_ERRORS,
    IDEMPOTENCY_KEY,
    LOCATION,
    WORKSPACE_ERRORS,
    Body,
    Link,
    Operation,
    Response,
)
from ..leads.query import CONFIRM_HEADER, reject_query, require_confirmation
from ..timeutil import format_ts, utcnow
from .repository import webhooks_repo_key
from .schemas import (
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
from .targets import target_problem

_create_schema = WebhookCreateSchema()
_update_schema = WebhookUpdateSchema()
_replay_schema = ReplaySchema()
_attempt_query = AttemptQuerySchema()
BASE = "/api/v1/webhooks"
# What an operation on one endpoint can be answered with, besides its body's errors.
_ONE_ENDPOINT_ERRORS = (ValidationFailed, WebhookNotFound, *WORKSPACE_ERRORS)
_NO_SUCH_ENDPOINT = {404: "No such webhook endpoint in the key's workspace"}
# Links from a response that carries one endpoint (its id at data.id) to what can be done to it.
_THIS_ENDPOINT = {"webhookId": "$response.body#/data/id"}
_ENDPOINT_LINKS = (
    Link("getWebhook", "Read this endpoint", _THIS_ENDPOINT),
    Link("updateWebhook", "Change this endpoint", _THIS_ENDPOINT),
    Link(
        "deleteWebhook", "Delete this endpoint (confirmed)", {**_THIS_ENDPOINT, "confirm": "true"}
    ),
    Link("rotateWebhookSecret", "Rotate this endpoint's secret", _THIS_ENDPOINT),
    Link("listWebhookDeliveries", "Read this endpoint's delivery log", _THIS_ENDPOINT),
    Link("replayWebhook", "Replay events to it", _THIS_ENDPOINT),
)
FIELDS = {"url": "url", "events": "events", "chatbot_ids": "chatbotIds", "enabled": "enabled"}


def _webhooks(request: web.Request) -> Any:
    return request.app[webhooks_repo_key]


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
    settings = request.app[appkeys.settings_key]
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


@Operation(
    operation_id="createWebhook",
    scope="webhooks:write",
    tag="webhooks",
    summary="Create a webhook endpoint",
    description="Subscribes a URL to the workspace's lead events. Responds 201 with the "
    "endpoint and its signing `secret`, which is shown only in this answer. Every "
    "delivery is a POST of the event JSON (the feed's item) signed per Standard Webhooks "
    "(`webhook-id`, `webhook-timestamp`, `webhook-signature`) and with PollyBot's "
    "`X-Webhook-Timestamp` and `X-Webhook-Signature`; a 2xx within 15 s is success, "
    "anything else is retried with backoff for 3 days. At most 50 endpoints per "
    "workspace (configurable). Takes no query parameters.",
    body=Body(WebhookCreateSchema, example=_CREATE_EXAMPLE),
    responses={
        201: Response(
            "The endpoint and its secret",
            WebhookSecretEnvelopeSchema,
            headers=LOCATION,
            links=_ENDPOINT_LINKS,
        )
    },
    parameters=(IDEMPOTENCY_KEY,),
    errors=(*BODY_ERRORS, *IDEMPOTENCY_ERRORS, *WORKSPACE_ERRORS),
)
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
        limit=request.app[appkeys.settings_key].webhook_max_endpoints,
    )
    response = ok(webhook_json(endpoint, secret), status=201)
    response.headers["Location"] = str(
        request.app.router["webhook"].url_for(webhookId=endpoint["id"])
    )
    return response


@Operation(
    operation_id="listWebhooks",
    scope="webhooks:read",
    tag="webhooks",
    summary="List webhook endpoints",
    description="Every endpoint of the key's workspace, oldest first (never their "
    "secrets). Takes no query parameters.",
    responses={200: Response("The endpoints", WebhookListEnvelopeSchema)},
    errors=(ValidationFailed, *WORKSPACE_ERRORS),
)
async def list_webhooks(request: web.Request) -> web.Response:
    reject_query(request.query)
    found = await _webhooks(request).list(workspace_id=request[AUTH].workspace_id)
    return ok({"webhooks": [webhook_json(e) for e in found]})


@Operation(
    operation_id="getWebhook",
    scope="webhooks:read",
    tag="webhooks",
    summary="Get a webhook endpoint",
    description="One endpoint (without its secret). Another workspace's endpoint, or a "
    "malformed id, is a 404. Takes no query parameters.",
    responses={200: Response("The endpoint", WebhookEnvelopeSchema, links=_ENDPOINT_LINKS[1:])},
    errors=_ONE_ENDPOINT_ERRORS,
    error_descriptions=_NO_SUCH_ENDPOINT,
)
async def get_webhook(request: web.Request) -> web.Response:
    reject_query(request.query)
    endpoint = await _webhooks(request).get(
        workspace_id=request[AUTH].workspace_id, webhook_id=request.match_info["webhookId"]
    )
    return ok(webhook_json(endpoint))


@Operation(
    operation_id="updateWebhook",
    scope="webhooks:write",
    tag="webhooks",
    summary="Change a webhook endpoint",
    description="Partial update of url, events, chatbotIds, enabled and description: "
    "only the fields sent change, at least one must be sent. `enabled: false` holds "
    "deliveries; `enabled: true` sends the held ones (also after a 410 disabled the "
    "endpoint). Events committed while it was disabled are not queued for it: replay "
    "them. Takes no query parameters.",
    body=Body(
        WebhookUpdateSchema,
        example={"enabled": True, "events": ["lead.created"]},
        min_properties=1,
    ),
    responses={200: Response("The whole endpoint, changed", WebhookEnvelopeSchema)},
    parameters=(IDEMPOTENCY_KEY,),
    errors=(*BODY_ERRORS, *IDEMPOTENCY_ERRORS, WebhookNotFound, *WORKSPACE_ERRORS),
    error_descriptions=_NO_SUCH_ENDPOINT,
)
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


@Operation(
    operation_id="deleteWebhook",
    scope="webhooks:write",
    tag="webhooks",
    summary="Delete a webhook endpoint",
    description="Permanent, with its queued deliveries and delivery log, so it must be "
    "confirmed like a lead's delete: `?confirm=true`, or the header `X-Confirm-Delete: "
    "true`; otherwise 400 `CONFIRMATION_REQUIRED` and nothing changes.",
    parameters=(CONFIRM_PARAMETER, IDEMPOTENCY_KEY),
    responses={200: Response("The endpoint is gone", WebhookDeleteEnvelopeSchema)},
    errors=(ConfirmationRequired, *IDEMPOTENCY_ERRORS, *_ONE_ENDPOINT_ERRORS),
    error_descriptions=_NO_SUCH_ENDPOINT,
)
async def delete_webhook(request: web.Request) -> web.Response:
    require_confirmation(request.query, request.headers.get(CONFIRM_HEADER))
    webhook_id = request.match_info["webhookId"]
    await _webhooks(request).delete(workspace_id=request[AUTH].workspace_id, webhook_id=webhook_id)
    return ok(
        {"id": webhook_id, "deletedAt": format_ts(utcnow())},
        message="Webhook deleted successfully",
    )


@Operation(
    operation_id="rotateWebhookSecret",
    scope="webhooks:write",
    tag="webhooks",
    summary="Rotate the signing secret",
    description="Issues a new secret, shown only in this answer. The previous one keeps "
    "signing too for 24 hours (`previousSecretExpiresAt`): meanwhile each delivery "
    "carries one signature per secret, so a receiver can switch at its own pace. Takes "
    "no query parameters and no body.",
    responses={200: Response("The endpoint and its new secret", WebhookSecretEnvelopeSchema)},
    parameters=(IDEMPOTENCY_KEY,),
    errors=(*IDEMPOTENCY_ERRORS, *_ONE_ENDPOINT_ERRORS),
    error_descriptions=_NO_SUCH_ENDPOINT,
)
async def rotate_secret(request: web.Request) -> web.Response:
    reject_query(request.query)
    endpoint, secret = await _webhooks(request).rotate_secret(
        workspace_id=request[AUTH].workspace_id, webhook_id=request.match_info["webhookId"]
    )
    return ok(webhook_json(endpoint, secret))


@Operation(
    operation_id="listWebhookDeliveries",
    scope="webhooks:read",
    tag="webhooks",
    summary="Read the delivery log",
    description="Every delivery attempt to this endpoint, newest first (kept 30 days by "
    "default; never a body): "
    "the event, when it was sent, the receiver's status code or the error, the duration, "
    "and when the next attempt is due. Page with `before` (the previous page's "
    "`pagination.nextBefore`).",
    query=AttemptQuerySchema,
    responses={200: Response("A page of attempts", AttemptListEnvelopeSchema)},
    errors=_ONE_ENDPOINT_ERRORS,
    error_descriptions=_NO_SUCH_ENDPOINT,
)
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


@Operation(
    operation_id="replayWebhook",
    scope="webhooks:write",
    tag="webhooks",
    summary="Replay events",
    description="Queues again, for this endpoint, every event after `after` of each of "
    "its chatbots (every chatbot of the workspace when it names none) that it "
    "subscribes to: also events delivered before, and events committed while it was "
    "disabled. The queueing runs in the background (202); deliveries follow in sequence "
    "order per chatbot as far as retries allow. Takes no query parameters.",
    body=Body(ReplaySchema, example={"after": 0}),
    responses={202: Response("The replay is queued", ReplayEnvelopeSchema)},
    parameters=(IDEMPOTENCY_KEY,),
    errors=(*BODY_ERRORS, *IDEMPOTENCY_ERRORS, WebhookNotFound, *WORKSPACE_ERRORS),
    error_descriptions=_NO_SUCH_ENDPOINT,
)
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
