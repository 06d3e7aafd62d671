"""The five lead operations: validated data in, one repository call, JSON out."""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from .. import appkeys
from ..errors import (
    ConfirmationRequired,
    DuplicateExternalId,
    LeadNotFound,
    PreconditionFailed,
    Suppressed,
    ValidationFailed,
)
from ..http.admission import quick
from ..http.body import load_body, load_fields, read_json_object
from ..http.context import AUTH, REQUEST_ID
from ..http.fields import camel
from ..http.responses import ok
from ..http.spec import (
    BODY_ERRORS,
    CHATBOT_ERRORS,
    CONFIRM_PARAMETER,
    ETAG,
    IDEMPOTENCY_ERRORS,
    IDEMPOTENCY_KEY,
    IF_MATCH,
    IF_NONE_MATCH,
    LEAD_IDEMPOTENCY_ERRORS,
    LOCATION,
    Body,
    Link,
    Operation,
    Response,
)
from ..idempotency.middleware import kept_response, receipt_for, response_of
from ..idempotency.records import Answer
from .query import (
    CONFIRM_HEADER,
    LeadListQuerySchema,
    cursor_codec_key,
    parse_list_query,
    reject_query,
    require_confirmation,
)
from .repository import leads_repo_key
from .responses import DeleteEnvelopeSchema, LeadEnvelopeSchema, LeadListEnvelopeSchema
from .results import LEADS_PATH, LeadGone, OneLead
from .rules import etag_matches, render_lead, rendered_etag
from .schemas import LeadCreateSchema, LeadUpdateSchema
from .upsert_match import UPSERT_PHONE_MESSAGE
from .writes import CREATE, DELETE, UPDATE, UPSERT, UPSERT_ON, LeadWrite

_create_schema = LeadCreateSchema()
_update_schema = LeadUpdateSchema()


lead_json = render_lead  # a lead as the API shows it
DUPLICATE_OR_IN_PROGRESS = (
    "Another lead of the chatbot has this externalId (`DUPLICATE_EXTERNAL_ID`), or a request "
    "with this Idempotency-Key is still running (`IDEMPOTENCY_IN_PROGRESS`: retry after "
    "Retry-After)"
)

# Links from a response that carries one lead (its id at data.id) to what can be done to it.
_THIS_LEAD = {"chatbotId": "$request.path.chatbotId", "leadId": "$response.body#/data/id"}
_READ_LEAD = Link("getLead", "Read this lead", _THIS_LEAD)
_CHANGE_LEAD = Link("updateLead", "Change this lead", _THIS_LEAD)
_DELETE_LEAD = Link("deleteLead", "Delete this lead (confirmed)", {**_THIS_LEAD, "confirm": "true"})


def upsert_write(fields: dict[str, Any], body: dict[str, Any], on: str = "email") -> LeadWrite:
    """Create ``fields``, or merge what was sent into the newest lead with the same
    ``on`` (UPSERT_ON). ValidationFailed when the lead lacks what it matches on: an
    external id, or a phone (the write refuses one that does not parse, in the chatbot's
    region: leads/transaction.py); an email it always has."""
    if on == "phone" and fields.get("phone") is None:
        raise ValidationFailed(details={"phone": [UPSERT_PHONE_MESSAGE]})
    if on == "externalId" and fields.get("external_id") is None:
        raise ValidationFailed(details={"externalId": ["An upsert by externalId needs one."]})
    merge = {k: v for k, v in fields.items() if camel(k) in body}
    return LeadWrite(UPSERT, fields, merge=merge, on=on)


def _upsert_mode(query: Any) -> str | None:
    """``?upsert=email|phone|externalId`` (the only query parameter a create takes)."""
    unknown = [name for name in query if name != "upsert"]
    if unknown:
        reject_query(query)
    values = query.getall("upsert", [])
    if not values:
        return None
    if len(values) != 1 or values[0] not in UPSERT_ON:
        raise ValidationFailed(
            "Invalid query parameters",
            details={"upsert": [f"Must be one of {', '.join(UPSERT_ON)}, given once."]},
        )
    on: str = values[0]
    return on


async def commit_writes(
    request: web.Request,
    writes: list[LeadWrite],
    answer: Answer,
    *,
    max_entries: int | None = None,
) -> web.Response:
    """Commit ``writes`` and send ``answer`` rendered from their outcomes: rendered in
    the write's transaction, and kept with it, when the request carries an
    Idempotency-Key. ``max_entries``: the most index entries they may write
    (LeadRepository.write)."""
    auth = request[AUTH]
    receipt = receipt_for(request, answer)
    outcomes = await request.app[leads_repo_key].write(
        chatbot_id=auth.chatbot_id,
        workspace_id=auth.workspace_id,
        writes=writes,
        receipt=receipt,
        max_entries=max_entries,
    )
    if receipt is not None and receipt.kept is not None:
        return kept_response(request, receipt.kept)
    return response_of(answer.render(outcomes))


@Operation(
    operation_id="createLead",
    scope="leads:write",
    tag="leads",
    summary="Create a lead",
    description="Stores a new lead for the chatbot. Responds 201 with the lead and a "
    "Location header pointing at it. Unknown fields and server-owned fields (id, "
    "chatbotId, workspaceId, createdAt, updatedAt, statusHistory) are a 400 naming them; "
    "so are control characters in any string field (metadata values excepted).\n\n"
    "With `?upsert=email`, `phone` or `externalId` (the only query parameter a create "
    "takes): when the chatbot has a lead with the same email (case-insensitive), the same "
    "phone number (`phoneE164`: the body's phone must parse, with `+` and country code, "
    "else 400) or the same externalId (the body must have one, else 400) — the most "
    "recently created one if several — the fields sent are merged into it as a PUT would "
    "(metadata merged) and the answer is 200; otherwise the lead is created (201). "
    "Concurrent upserts of one email, phone or external id leave one lead with every "
    "change applied.\n\n"
    "An email or phone the workspace suppresses (`POST /api/v1/privacy/erasures` with "
    "`suppress`) is a 422 `SUPPRESSED`, nothing stored.",
    parameters=(
        {
            "in": "query",
            "name": "upsert",
            "required": False,
            "schema": {"type": "string", "enum": list(UPSERT_ON)},
            "description": "`email`, `phone` or `externalId`: create, or merge into the "
            "lead with the same one.",
        },
        IDEMPOTENCY_KEY,
    ),
    body=Body(
        LeadCreateSchema,
        example={
            "name": "John Doe",
            "email": "john.doe@example.com",
            "phone": "+1-555-123-4567",
            "source": "website",
            "metadata": {"utm_source": "google"},
        },
    ),
    responses={
        201: Response(
            "The new lead",
            LeadEnvelopeSchema,
            headers={**LOCATION, **ETAG},
            links=(_READ_LEAD, _CHANGE_LEAD, _DELETE_LEAD),
        ),
        200: Response(
            "Upsert only: the existing lead the body was merged into",
            LeadEnvelopeSchema,
            headers=ETAG,
        ),
    },
    errors=(
        *BODY_ERRORS,
        Suppressed,
        DuplicateExternalId,
        *LEAD_IDEMPOTENCY_ERRORS,
        *CHATBOT_ERRORS,
    ),
    error_descriptions={
        409: DUPLICATE_OR_IN_PROGRESS,
        422: "The email or phone is suppressed in this workspace (`SUPPRESSED`), or the "
        "Idempotency-Key was used with a different method, path or body",
    },
)
async def create_lead(request: web.Request) -> web.Response:
    upsert = _upsert_mode(request.query)
    body = await read_json_object(request, request.app[appkeys.settings_key].max_body_bytes)
    fields = load_fields(_create_schema, body)
    write = upsert_write(fields, body, upsert) if upsert else LeadWrite(CREATE, fields)
    return await commit_writes(request, [write], OneLead(request[REQUEST_ID]))


@Operation(
    operation_id="listLeads",
    scope="leads:read",
    tag="leads",
    summary="List leads",
    description="Newest first by default. Page with page/limit, or with cursor "
    "(pagination.nextCursor of the previous page), which stays correct while leads are "
    "added; page and cursor together are a 400. Filters combine (AND). Unknown, repeated "
    "or malformed parameters are a 400 naming them.\n\n"
    "**Metadata filters.** `metadata.<key>=<value>` filters on a top-level metadata key "
    "(`<key>`: 1-100 characters, not starting with `$`, without `.`; the value at most "
    "200 characters; neither with control characters). The value matches the same "
    'string, and also the number or boolean it spells (`5` matches 5, 5.0 and "5"; `true` '
    'matches true and "true"; any 64-bit integer exactly); an array matches when one '
    "element does. Up to 5 metadata filters. OpenAPI 3.0 cannot declare "
    "a family of parameters named by a prefix, so they are not listed among the "
    "parameters below; the server accepts them all the same, e.g. "
    "`?metadata.utm_source=google&metadata.seats=5`.",
    query=LeadListQuerySchema,
    responses={200: Response("A page of leads", LeadListEnvelopeSchema)},
    errors=(ValidationFailed, *CHATBOT_ERRORS),
)
async def list_leads(request: web.Request) -> web.Response:
    auth = request[AUTH]
    codec = request.app[cursor_codec_key]
    query = parse_list_query(request.query, codec)
    page = await request.app[leads_repo_key].list(chatbot_id=auth.chatbot_id, query=query)
    total_pages = math.ceil(page.total / query.limit) if page.total else 0
    next_cursor = codec.encode(page.last_position) if page.has_next and page.last_position else None
    pagination: dict[str, Any] = {
        "page": query.page if query.after is None else None,
        "limit": query.limit,
        "total": page.total,
        "totalPages": total_pages,
        "hasNext": page.has_next,
        "hasPrev": query.page > 1 or query.after is not None,
        "nextCursor": next_cursor,
    }
    if not page.total_exact:  # only where list.max_count bounds counting
        pagination["totalExact"] = False
    return ok({"leads": [lead_json(lead) for lead in page.leads], "pagination": pagination})


@Operation(
    operation_id="getLead",
    scope="leads:read",
    tag="leads",
    summary="Get a lead",
    description="The complete lead, with its status history. A lead that does not exist, "
    "was deleted, belongs to another chatbot or has a malformed id is a 404. Takes no "
    "query parameters (any is a 400).",
    parameters=(IF_NONE_MATCH,),
    responses={
        200: Response(
            "The lead", LeadEnvelopeSchema, headers=ETAG, links=(_CHANGE_LEAD, _DELETE_LEAD)
        ),
        304: Response("Not modified: If-None-Match names the current ETag", headers=ETAG),
    },
    errors=(ValidationFailed, LeadNotFound, *CHATBOT_ERRORS),
)
@quick
async def get_lead(request: web.Request) -> web.Response:
    if request.rel_url.raw_query_string:  # no query string: no parameters to parse
        reject_query(request.query)
    lead = await request.app[leads_repo_key].get(
        chatbot_id=request[AUTH].chatbot_id, lead_id=request.match_info["leadId"]
    )
    shown = lead_json(lead)
    etag = rendered_etag(shown)
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None and etag_matches(if_none_match, etag, weak=True):
        return web.Response(status=304, headers={"ETag": etag})
    response = ok(shown)
    response.headers["ETag"] = etag
    return response


@Operation(
    operation_id="updateLead",
    scope="leads:write",
    tag="leads",
    summary="Update a lead",
    description="Partial update: only the fields sent change, and at least one must be "
    "sent (an empty object is a 400). `metadata` is merged as a JSON Merge Patch (RFC "
    "7386); `phone` and `source` may be null to clear them; `name`, `email`, `status` and "
    "`metadata` may not be null; a new status is appended to statusHistory. Concurrent "
    "updates never lose each other. Takes no query parameters.",
    parameters=(IF_MATCH, IDEMPOTENCY_KEY),
    body=Body(
        LeadUpdateSchema,
        example={"status": "contacted", "metadata": {"plan": "pro"}},
        min_properties=1,
    ),
    responses={
        200: Response(
            "The whole updated lead",
            LeadEnvelopeSchema,
            headers=ETAG,
            links=(_READ_LEAD, _DELETE_LEAD),
        )
    },
    errors=(
        *BODY_ERRORS,
        LeadNotFound,
        PreconditionFailed,
        DuplicateExternalId,
        *LEAD_IDEMPOTENCY_ERRORS,
        *CHATBOT_ERRORS,
    ),
    error_descriptions={409: DUPLICATE_OR_IN_PROGRESS},
)
async def update_lead(request: web.Request) -> web.Response:
    reject_query(request.query)
    changes = await load_body(request, _update_schema)
    if not changes:
        raise ValidationFailed("No fields to update")
    write = LeadWrite(
        UPDATE, changes, request.match_info["leadId"], if_match=request.headers.get("If-Match")
    )
    return await commit_writes(request, [write], OneLead(request[REQUEST_ID]))


@Operation(
    operation_id="deleteLead",
    scope="leads:write",
    tag="leads",
    summary="Delete a lead",
    description="Permanent, so it must be confirmed: `?confirm=true`, or instead the "
    "header `X-Confirm-Delete: true` (case-insensitive). Without a confirmation, or with "
    "one that says anything but true (`confirm=false`, even beside a confirming header), "
    "nothing is deleted and the answer is 400 `CONFIRMATION_REQUIRED`. The query parameter "
    "is declared required below because OpenAPI 3.0 cannot say 'this parameter or that "
    "header'. An audit record (ids and time, no personal data) is kept.",
    parameters=(CONFIRM_PARAMETER, IF_MATCH, IDEMPOTENCY_KEY),
    responses={200: Response("The lead is gone", DeleteEnvelopeSchema)},
    errors=(
        ValidationFailed,
        ConfirmationRequired,
        LeadNotFound,
        PreconditionFailed,
        *IDEMPOTENCY_ERRORS,
        *CHATBOT_ERRORS,
    ),
)
async def delete_lead(request: web.Request) -> web.Response:
    require_confirmation(request.query, request.headers.get(CONFIRM_HEADER))
    auth = request[AUTH]
    write = LeadWrite(
        DELETE,
        lead_id=request.match_info["leadId"],
        if_match=request.headers.get("If-Match"),
        audit={
            "workspaceId": auth.workspace_id,
            "apiKeyId": auth.key.id,
            "requestId": request[REQUEST_ID],
        },
    )

    return await commit_writes(request, [write], LeadGone(request[REQUEST_ID]))


def add_routes(app: web.Application) -> None:

    base = LEADS_PATH
    # Any segment but the names of /leads' own sub-resources (export), so that a method
    # they do not take is a 405 there, not a lead's 404.
    lead = base + "/{leadId:(?!export$)[^{}/]+}"
    app.router.add_post(base, create_lead, name="leads")
    app.router.add_get(base, list_leads, allow_head=False)
    app.router.add_get(lead, get_lead, name="lead", allow_head=False)
    app.router.add_put(lead, update_lead)
    app.router.add_delete(lead, delete_lead)
