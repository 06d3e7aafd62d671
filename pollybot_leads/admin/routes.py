"""``/api/v1/admin/…``: workspaces, chatbots, API keys and the audit, for the platform
running the service (admin keys only; admin/service.py does the work)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..appkeys import settings_key
from ..errors import (
    ApiKeyNotFound,
    AuditRecordNotFound,
    ChatbotNotFound,
    ConfirmationRequired,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
    ValidationFailed,
    WorkspaceNotFound,
)
from ..http.body import load_fields, load_query, read_json_object
from ..http.context import ADMIN_KEY, ADMIN_SCOPE, REQUEST_ID
from ..http.responses import ok
from ..http.spec import BODY_ERRORS, CONFIRM_PARAMETER, LOCATION, Body, Operation, Response
from ..leads.query import reject_query, require_confirmation
from .schemas import (
    AuditPageEnvelopeSchema,
    AuditQuerySchema,
    ChatbotCreateSchema,
    ChatbotEnvelopeSchema,
    ChatbotListEnvelopeSchema,
    ChatbotUpdateSchema,
    IssuedKeyEnvelopeSchema,
    KeyCreateSchema,
    KeyEnvelopeSchema,
    KeyListEnvelopeSchema,
    KeyRollSchema,
    KeyUpdateSchema,
    RolledKeyEnvelopeSchema,
    WorkspaceCreateSchema,
    WorkspaceEnvelopeSchema,
    WorkspacePageEnvelopeSchema,
    WorkspaceQuerySchema,
)
from .service import Actor, AdminService

BASE = "/api/v1/admin"
admin_service_key = web.AppKey("admin_service", AdminService)
# Any admin request: no valid admin key (a workspace key included), too many failures,
# no store in time.
ADMIN_ERRORS = (Unauthorized, RateLimited, ServiceUnavailable)
_KEY_FIELDS = {
    "name": "name",
    "scopes": "scopes",
    "chatbot_ids": "chatbot_ids",
    "expires_at": "expires_at",
    "rate_limit": "rate_limit",
}
_schemas = {
    schema: schema()
    for schema in (
        WorkspaceCreateSchema,
        ChatbotCreateSchema,
        ChatbotUpdateSchema,
        KeyCreateSchema,
        KeyUpdateSchema,
        KeyRollSchema,
        WorkspaceQuerySchema,
        AuditQuerySchema,
    )
}


def _actor(request: web.Request) -> Actor:
    return Actor(admin_key_id=request[ADMIN_KEY].id, request_id=request[REQUEST_ID])


async def _body(request: web.Request, schema: type[Any], *, empty_ok: bool = False) -> Any:
    reject_query(request.query)
    if empty_ok and not request.body_exists:  # whatever Content-Type it names
        return load_fields(_schemas[schema], {})
    body = await read_json_object(request, request.app[settings_key].max_body_bytes)
    return load_fields(_schemas[schema], body)


def _service(request: web.Request) -> AdminService:
    return request.app[admin_service_key]


def _created(data: dict[str, Any], location: str) -> web.Response:
    response = ok(data, status=201)
    response.headers["Location"] = location
    return response


def _key_changes(fields: dict[str, Any]) -> dict[str, Any]:
    changes = {_KEY_FIELDS[k]: v for k, v in fields.items()}
    if changes.get("rate_limit") is not None:
        limit = changes["rate_limit"]
        changes["rate_limit"] = {
            "capacity": limit["capacity"],
            "refillPerSecond": limit["refill_per_second"],
        }
    return changes


def _confirmed(request: web.Request) -> None:
    require_confirmation(request.query, request.headers.get("X-Confirm-Delete"))


_CONFIRM_ERRORS = (ValidationFailed, ConfirmationRequired)

# --- workspaces ------------------------------------------------------------------------


@Operation(
    operation_id="adminCreateWorkspace",
    scope=ADMIN_SCOPE,
    tag="admin",
    summary="Create a workspace",
    description="A new, empty workspace: add chatbots and keys to it next. Takes no query "
    "parameters.",
    body=Body(WorkspaceCreateSchema, example={"name": "Acme"}),
    responses={201: Response("The workspace", WorkspaceEnvelopeSchema, headers=LOCATION)},
    errors=(*BODY_ERRORS, *ADMIN_ERRORS),
)
async def create_workspace(request: web.Request) -> web.Response:
    fields = await _body(request, WorkspaceCreateSchema)
    shown = await _service(request).create_workspace(_actor(request), name=fields["name"])
    return _created(shown, f"{BASE}/workspaces/{shown['id']}")


@Operation(
    operation_id="adminListWorkspaces",
    scope=ADMIN_SCOPE,
    tag="admin",
    summary="List workspaces",
    description="Every workspace (those being deleted too), in id order, by `cursor` and `limit`.",
    query=WorkspaceQuerySchema,
    responses={200: Response("A page of workspaces", WorkspacePageEnvelopeSchema)},
    errors=(ValidationFailed, *ADMIN_ERRORS),
)
async def list_workspaces(request: web.Request) -> web.Response:
    query = load_query(request.query, _schemas[WorkspaceQuerySchema])
    found, more = await _service(request).workspaces(
        after=query.get("cursor"), limit=query["limit"]
    )
    pagination = {
        "limit": query["limit"],
        "hasMore": more,
        "nextCursor": found[-1]["id"] if more else None,
    }
    return ok({"workspaces": found, "pagination": pagination})


@Operation(
    operation_id="adminGetWorkspace",
    scope=ADMIN_SCOPE,
    tag="admin",
    summary="Get a workspace",
    description="The workspace with counts of its chatbots, keys not revoked and leads; "
    "while it is being deleted, `status` is `deleting` and `deletion` shows the job's "
    "progress; once it is gone, 404. Takes no query parameters.",
    responses={200: Response("The workspace", WorkspaceEnvelopeSchema)},
    errors=(ValidationFailed, WorkspaceNotFound, *ADMIN_ERRORS),
)
async def get_workspace(request: web.Request) -> web.Response:
    reject_query(request.query)
    return ok(await _service(request).workspace(request.match_info["workspaceId"]))


@Operation(
    operation_id="adminDeleteWorkspace",
    scope=ADMIN_SCOPE,
    tag="admin",
    summary="Delete a workspace",
    description="Permanent: its keys stop working at once (in this process; in every "
    "process within the key cache time), and a background job that survives restarts "
    "removes its chatbots, leads, events, webhook endpoints and deliveries, suppressions, "
    "kept Idempotency-Key results and keys. `GET` shows `status: deleting` and the job's "
    "progress until it is gone, then 404. Asking again while it runs answers the same "
    "202. Needs `?confirm=true` (or `X-Confirm-Delete: true`).",
    parameters=(CONFIRM_PARAMETER,),
    responses={202: Response("The deletion has begun", WorkspaceEnvelopeSchema)},
    errors=(*_CONFIRM_ERRORS, WorkspaceNotFound, *ADMIN_ERRORS),
)
async def delete_workspace(request: web.Request) -> web.Response:
    _confirmed(request)
    service = _service(request)
    shown = await service.delete_workspace(_actor(request), request.match_info["workspaceId"])
    return ok(shown, status=202)


# --- chatbots --------------------------------------------------------------------------


@Operation(
    operation_id="adminCreateChatbot",
    scope=ADMIN_SCOPE,
    tag="admin",
    summary="Create a chatbot",
    description="A chatbot of the workspace, with the region that reads its phone numbers "
    "written without `+`. Takes no query parameters.",
    body=Body(ChatbotCreateSchema, example={"name": "Website bot", "defaultRegion": "US"}),
    responses={201: Response("The chatbot", ChatbotEnvelopeSchema, headers=LOCATION)},
    errors=(*BODY_ERRORS, WorkspaceNotFound, *ADMIN_ERRORS),
)
async def create_chatbot(request: web.Request) -> web.Response:
    fields = await _body(request, ChatbotCreateSchema)
    shown = await _service(request).create_chatbot(
        _actor(request),
        workspace_id=request.match_info["workspaceId"],
        name=fields["name"],
        default_region=fields["default_region"],
    )
    return _created({**shown, "deletion": None}, f"{BASE}/chatbots/{shown['id']}")


@Operation(
    operation_id="adminListChatbots",
    scope=ADMIN_SCOPE,
    tag="admin",
    summary="List a workspace's chatbots",
    description="Its chatbots (those being deleted too), in id order. Takes no query parameters.",
    responses={200: Response("Its chatbots", ChatbotListEnvelopeSchema)},
    errors=(ValidationFailed, WorkspaceNotFound, *ADMIN_ERRORS),
)
async def list_chatbots(request: web.Request) -> web.Response:
    reject_query(request.query)
    found = await _service(request).chatbots(request.match_info["workspaceId"])
    return ok({"chatbots": found})


@Operation(
    operation_id="adminGetChatbot",
    scope=ADMIN_SCOPE,
    tag="admin",
    summary="Get a chatbot",
    description="The chatbot; while it is being deleted, `status` is `deleting` and "
    "`deletion` shows the job's progress; once it is gone, 404. Takes no query parameters.",
    responses={200: Response("The chatbot", ChatbotEnvelopeSchema)},
    errors=(ValidationFailed, ChatbotNotFound, *ADMIN_ERRORS),
)
async def get_chatbot(request: web.Request) -> web.Response:
    reject_query(request.query)
    return ok(await _service(request).chatbot(request.match_info["chatbotId"]))


@Operation(
    operation_id="adminUpdateChatbot",
    scope=ADMIN_SCOPE,
    tag="admin",
    summary="Change a chatbot",
    description="Its `name` and `defaultRegion` (null: none), only those sent. A region "
    "applies to phone numbers written from then on. A chatbot being deleted is a 404. "
    "Takes no query parameters.",
    body=Body(ChatbotUpdateSchema, example={"defaultRegion": "GB"}, min_properties=1),
    responses={200: Response("The chatbot", ChatbotEnvelopeSchema)},
    errors=(*BODY_ERRORS, ChatbotNotFound, *ADMIN_ERRORS),
)
async def update_chatbot(request: web.Request) -> web.Response:
    fields = await _body(request, ChatbotUpdateSchema)
    if not fields:
        raise ValidationFailed("Send at least one of name and defaultRegion")
    shown = await _service(request).update_chatbot(
        _actor(request), request.match_info["chatbotId"], fields
    )
    return ok({**shown, "deletion": None})


@Operation(
    operation_id="adminDeleteChatbot",
    scope=ADMIN_SCOPE,
    tag="admin",
    summary="Delete a chatbot",
    description="Permanent, as a workspace's deletion: it answers 404 to every key at once "
    "(in this process; in every process within the key cache time), and a background job "
    "removes its leads, events, counters and queued deliveries. Needs `?confirm=true` (or "
    "`X-Confirm-Delete: true`).",
    parameters=(CONFIRM_PARAMETER,),
    responses={202: Response("The deletion has begun", ChatbotEnvelopeSchema)},
    errors=(*_CONFIRM_ERRORS, ChatbotNotFound, *ADMIN_ERRORS),
)
async def delete_chatbot(request: web.Request) -> web.Response:
    _confirmed(request)
    shown = await _service(request).delete_chatbot(_actor(request), request.match_info["chatbotId"])
    return ok(shown, status=202)


# --- keys ------------------------------------------------------------------------------


@Operation(
    operation_id="adminCreateKey",
    scope=ADMIN_SCOPE,
    tag="admin",
    summary="Create an API key",
    description="A workspace key with the scopes, chatbots, expiry and rate limit given "
    "(by default: every scope, every chatbot, no expiry, the server's rate limit). Its "
    "secret is in this answer only: it is stored as a digest. Takes no query parameters.",
    body=Body(
        KeyCreateSchema,
        example={"name": "Analytics (read only)", "scopes": ["leads:read"]},
    ),
    responses={201: Response("The key, with its secret", IssuedKeyEnvelopeSchema)},
    errors=(*BODY_ERRORS, WorkspaceNotFound, *ADMIN_ERRORS),
)
async def create_key(request: web.Request) -> web.Response:
    fields = _key_changes(await _body(request, KeyCreateSchema))
    rate_limit = fields.pop("rate_limit", None) or {}
    shown, secret = await _service(request).create_key(
        _actor(request),
        workspace_id=request.match_info["workspaceId"],
        rate_limit_capacity=rate_limit.get("capacity"),
        rate_limit_refill=rate_limit.get("refillPerSecond"),
        **fields,
    )
    return ok({**shown, "key": secret}, status=201)


@Operation(
    operation_id="adminListKeys",
    scope=ADMIN_SCOPE,
    tag="admin",
    summary="List a workspace's keys",
    description="Its keys, revoked ones too, oldest first, with `lastUsedAt`; never a "
    "secret. Takes no query parameters.",
    responses={200: Response("Its keys", KeyListEnvelopeSchema)},
    errors=(ValidationFailed, WorkspaceNotFound, *ADMIN_ERRORS),
)
async def list_keys(request: web.Request) -> web.Response:
    reject_query(request.query)
    return ok({"keys": await _service(request).keys(request.match_info["workspaceId"])})


@Operation(
    operation_id="adminUpdateKey",
    scope=ADMIN_SCOPE,
    tag="admin",
    summary="Change an API key",
    description="Its name, scopes, chatbots, expiry and rate limit, only those sent (null "
    "clears chatbots, expiry and rate limit). Seen at once by this process, by every "
    "process within the key cache time. A revoked key is a 404. Takes no query parameters.",
    body=Body(KeyUpdateSchema, example={"scopes": ["leads:read", "leads:write"]}, min_properties=1),
    responses={200: Response("The key", KeyEnvelopeSchema)},
    errors=(*BODY_ERRORS, ApiKeyNotFound, *ADMIN_ERRORS),
)
async def update_key(request: web.Request) -> web.Response:
    fields = _key_changes(await _body(request, KeyUpdateSchema))
    if not fields:
        raise ValidationFailed("Send at least one field to change")
    shown = await _service(request).update_key(_actor(request), request.match_info["keyId"], fields)
    return ok(shown)


@Operation(
    operation_id="adminRevokeKey",
    scope=ADMIN_SCOPE,
    tag="admin",
    summary="Revoke an API key",
    description="Refused from now on: at once by this process, by every process within the "
    "key cache time (`auth.key_cache_seconds`, 30 s by default). Revoking a revoked key "
    "changes nothing. Takes no query parameters.",
    responses={200: Response("The revoked key", KeyEnvelopeSchema)},
    errors=(ValidationFailed, ApiKeyNotFound, *ADMIN_ERRORS),
)
async def revoke_key(request: web.Request) -> web.Response:
    reject_query(request.query)
    return ok(await _service(request).revoke_key(_actor(request), request.match_info["keyId"]))


@Operation(
    operation_id="adminRollKey",
    scope=ADMIN_SCOPE,
    tag="admin",
    summary="Roll an API key",
    description="A new secret for the same key (its id, scopes and limits stay); the "
    "current secret keeps working for `expireOldInSeconds` (0, the default: it stops at "
    "once), exact to the second. Rolling again replaces the previous secret kept. The body "
    "may be left out. Takes no query parameters.",
    body=Body(KeyRollSchema, example={"expireOldInSeconds": 3600}),
    responses={200: Response("The key with its new secret", RolledKeyEnvelopeSchema)},
    errors=(*BODY_ERRORS, ApiKeyNotFound, *ADMIN_ERRORS),
)
async def roll_key(request: web.Request) -> web.Response:
    fields = await _body(request, KeyRollSchema, empty_ok=True)
    shown, secret, until = await _service(request).roll_key(
        _actor(request),
        request.match_info["keyId"],
        expire_old_in_seconds=fields["expire_old_in_seconds"],
    )
    return ok({**shown, "key": secret, "oldKeyExpiresAt": until})


# --- the audit ---------------------------------------------------------------------------


@Operation(
    operation_id="adminListAudit",
    scope=ADMIN_SCOPE,
    tag="admin",
    summary="Read the audit",
    description="Admin actions (from the API or the CLI) and lead deletions, oldest first, "
    "by `after` and `limit`: actor, action, target, time and request id; never a secret "
    "or a lead's personal data. Kept 365 days by default (`retention.audit_days`).",
    query=AuditQuerySchema,
    responses={200: Response("A page of the audit", AuditPageEnvelopeSchema)},
    errors=(ValidationFailed, AuditRecordNotFound, *ADMIN_ERRORS),
    error_descriptions={404: "No audit record with the id `after` names (it may have expired)"},
)
async def list_audit(request: web.Request) -> web.Response:
    query = load_query(request.query, _schemas[AuditQuerySchema])
    found, more = await _service(request).audit_page(after=query.get("after"), limit=query["limit"])
    pagination = {
        "limit": query["limit"],
        "hasMore": more,
        "nextAfter": found[-1]["id"] if more else None,
    }
    return ok({"entries": found, "pagination": pagination})


def add_admin_routes(app: web.Application) -> None:
    router = app.router
    router.add_post(BASE + "/workspaces", create_workspace)
    router.add_get(BASE + "/workspaces", list_workspaces, allow_head=False)
    router.add_get(BASE + "/workspaces/{workspaceId}", get_workspace, allow_head=False)
    router.add_delete(BASE + "/workspaces/{workspaceId}", delete_workspace)
    router.add_post(BASE + "/workspaces/{workspaceId}/chatbots", create_chatbot)
    router.add_get(BASE + "/workspaces/{workspaceId}/chatbots", list_chatbots, allow_head=False)
    router.add_post(BASE + "/workspaces/{workspaceId}/keys", create_key)
    router.add_get(BASE + "/workspaces/{workspaceId}/keys", list_keys, allow_head=False)
    router.add_get(BASE + "/chatbots/{chatbotId}", get_chatbot, allow_head=False)
    router.add_patch(BASE + "/chatbots/{chatbotId}", update_chatbot)
    router.add_delete(BASE + "/chatbots/{chatbotId}", delete_chatbot)
    router.add_patch(BASE + "/keys/{keyId}", update_key)
    router.add_delete(BASE + "/keys/{keyId}", revoke_key)
    router.add_post(BASE + "/keys/{keyId}/roll", roll_key)
    router.add_get(BASE + "/audit", list_audit, allow_head=False)
