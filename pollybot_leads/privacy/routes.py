"""``/api/v1/privacy/…``: erase a person from the workspace, and its suppression list."""

from __future__ import annotations

from aiohttp import web

from ..accounts.repository import accounts_repo_key
from ..appkeys import settings_key
from ..errors import ConfirmationRequired, SuppressionNotFound, ValidationFailed
from ..http.body import load_fields, load_query, read_json_object
from ..http.context import AUTH, REQUEST_ID
from ..http.deadline import STREAM_BUDGET, stepped
from ..http.responses import ok
from ..http.spec import (
    BODY_ERRORS,
    IDEMPOTENCY_ERRORS,
    IDEMPOTENCY_KEY,
    WORKSPACE_ERRORS,
    Body,
    Operation,
    Response,
)
from ..idempotency.middleware import KEPT, LEASE, stored
from ..idempotency.records import idempotency_key
from ..leads.query import reject_query
from ..leads.repository import leads_repo_key
from ..leads.suppressions import EMAIL, PHONE
from ..leads.writes import ERASE_CHUNK
from ..timeutil import format_ts
from .erasure import erase
from .schemas import (
    ErasureEnvelopeSchema,
    ErasureSchema,
    SuppressionDeleteEnvelopeSchema,
    SuppressionListEnvelopeSchema,
    SuppressionQuerySchema,
)

BASE = "/api/v1/privacy"
_erasure_schema = ErasureSchema()
_suppression_query = SuppressionQuerySchema()


@Operation(
    operation_id="createErasure",
    scope="privacy:write",
    tag="privacy",
    summary="Erase a person",
    description="Deletes every lead of the key's workspace, in all its chatbots, with this "
    "email (case-insensitive) or phone (the same number in E.164 where it parses, else "
    "the same digits), each as `DELETE` would: its earlier events redacted, kept "
    "Idempotency-Key results holding it dropped, an audit record kept, and a "
    '`lead.deleted` event with `"reason": "erasure"`. With `"suppress": true` the address '
    "is also kept as a keyed hash, and from then on a create, upsert or batch item with it "
    'is a 422 `SUPPRESSED`. Permanent, so it needs `"confirm": true` (otherwise 400 '
    "`CONFIRMATION_REQUIRED`, nothing done). Leads are deleted in transactions of up to "
    f"{ERASE_CHUNK}, each with the request budget of its own; a 503 midway leaves those deleted so "
    "far deleted, and the same call again erases the rest. Takes no query parameters.",
    body=Body(
        ErasureSchema,
        example={"email": "former.customer@example.com", "suppress": True, "confirm": True},
        one_of=("email", "phone"),
    ),
    responses={200: Response("What was erased", ErasureEnvelopeSchema)},
    parameters=(IDEMPOTENCY_KEY,),
    errors=(*BODY_ERRORS, ConfirmationRequired, *IDEMPOTENCY_ERRORS, *WORKSPACE_ERRORS),
)
@stepped
async def create_erasure(request: web.Request) -> web.Response:
    reject_query(request.query)
    body = await read_json_object(request, request.app[settings_key].max_body_bytes)
    if body.get("confirm", False) is False:  # anything but a boolean: the schema's 400
        raise ConfirmationRequired(
            'Erasure is permanent: confirm with "confirm": true',
            details={"confirm": ["Must be true."]},
        )
    fields = load_fields(_erasure_schema, body)
    auth = request[AUTH]
    budget = request[STREAM_BUDGET]
    budget.begin()  # from here, each step has a budget of its own
    kind = EMAIL if "email" in fields else PHONE
    done = await erase(
        request.app[leads_repo_key],
        request.app[accounts_repo_key],
        workspace_id=auth.workspace_id,
        kind=kind,
        address=fields[kind],
        suppress=fields["suppress"],
        audit={
            "workspaceId": auth.workspace_id,
            "apiKeyId": auth.key.id,
            "requestId": request[REQUEST_ID],
        },
        step=budget.step,
    )
    response = ok(
        {"erased": len(done.lead_ids), "leadIds": done.lead_ids, "suppressed": done.suppressed}
    )
    lease = request.get(LEASE)
    if lease is not None:  # kept in a step too: the request's own budget may be spent
        result = stored(response)
        await budget.step(lambda: request.app[idempotency_key].complete(lease, result))
        request[KEPT] = True
    return response


@Operation(
    operation_id="listSuppressions",
    scope="privacy:write",
    tag="privacy",
    summary="List suppressions",
    description="The workspace's suppressed addresses, oldest id first, by `after` and "
    "`limit`: each one's id, kind (`email` or `phone`) and time, never the address (only "
    "a keyed hash of it is kept).",
    query=SuppressionQuerySchema,
    responses={200: Response("A page of suppressions", SuppressionListEnvelopeSchema)},
    errors=(ValidationFailed, *WORKSPACE_ERRORS),
)
async def list_suppressions(request: web.Request) -> web.Response:
    query = load_query(request.query, _suppression_query)
    found, more = await request.app[leads_repo_key].suppressions.page(
        request[AUTH].workspace_id, after=query.get("after"), limit=query["limit"]
    )
    shown = [
        {"id": item.id, "kind": item.kind, "createdAt": format_ts(item.created_at)}
        for item in found
    ]
    return ok(
        {
            "suppressions": shown,
            "pagination": {
                "limit": query["limit"],
                "hasMore": more,
                "nextAfter": found[-1].id if more else None,
            },
        }
    )


@Operation(
    operation_id="deleteSuppression",
    scope="privacy:write",
    tag="privacy",
    summary="Lift a suppression",
    description="The address may be captured again. Another workspace's suppression, or "
    "a malformed id, is a 404. Takes no query parameters.",
    responses={200: Response("The suppression is lifted", SuppressionDeleteEnvelopeSchema)},
    parameters=(IDEMPOTENCY_KEY,),
    errors=(ValidationFailed, SuppressionNotFound, *IDEMPOTENCY_ERRORS, *WORKSPACE_ERRORS),
    error_descriptions={404: "No such suppression in the key's workspace"},
)
async def delete_suppression(request: web.Request) -> web.Response:
    reject_query(request.query)
    suppression_id = request.match_info["suppressionId"]
    suppressions = request.app[leads_repo_key].suppressions
    await suppressions.remove(request[AUTH].workspace_id, suppression_id)
    return ok({"id": suppression_id, "deleted": True})


def add_privacy_routes(app: web.Application) -> None:
    app.router.add_post(BASE + "/erasures", create_erasure)
    app.router.add_get(BASE + "/suppressions", list_suppressions, allow_head=False)
    app.router.add_delete(BASE + "/suppressions/{suppressionId}", delete_suppression)
