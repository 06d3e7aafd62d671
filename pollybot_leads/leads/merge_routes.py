"""``…/leads/{leadId}/duplicates`` and ``…/leads/{leadId}/merge``: one person, one lead."""

from __future__ import annotations

from aiohttp import web
from marshmallow import fields, validate

from .. import appkeys
from ..errors import LeadMerged, LeadNotFound, PreconditionFailed, ValidationFailed
from ..http.body import load_fields, load_query, read_json_object
from ..http.context import AUTH, REQUEST_ID
from ..http.fields import CamelSchema, QueryInteger, StrictBoolean, Text, each_once
from ..http.responses import SUCCESS, doc, ok
from ..http.spec import (
    BODY_ERRORS,
    CHATBOT_ERRORS,
    IDEMPOTENCY_KEY,
    IF_MATCH,
    LEAD_IDEMPOTENCY_ERRORS,
    Body,
    Operation,
    Response,
)
from .query import reject_query
from .repository import leads_repo_key
from .responses import LeadEnvelopeSchema, LeadSummarySchema
from .results import LEAD_PATH, OneLead
from .routes import commit_writes
from .rules import render_lead
from .writes import MERGE, MERGE_SOURCES_MAX, LeadWrite

LEAD_PATTERN = "lead_[0-9a-f]{16}"
DUPLICATES_MAX = 100


class MergeSchema(CamelSchema):
    source_ids = fields.List(
        Text(max_length=21, pattern=LEAD_PATTERN, pattern_message="Not a lead id."),
        required=True,
        validate=[validate.Length(1, MERGE_SOURCES_MAX), each_once("Give each id once.")],
        metadata=doc(
            f"1-{MERGE_SOURCES_MAX} leads of the chatbot to merge into this one, each once "
            "and not this one. Each must exist (else 404, nothing merged).",
            uniqueItems=True,
            example=["lead_0123456789abcdef"],
        ),
    )
    dry_run = StrictBoolean(
        load_default=False,
        metadata=doc("Answer the lead the merge would make, and change nothing.", example=False),
    )


class DuplicatesQuerySchema(CamelSchema):
    limit = QueryInteger(
        load_default=20,
        validate=validate.Range(1, DUPLICATES_MAX),
        metadata=doc("The most duplicates returned (newest first).", example=20),
    )


class DuplicateSchema(CamelSchema):
    lead = fields.Nested(LeadSummarySchema, required=True, metadata=doc("The other lead."))
    matched_on = fields.List(
        fields.String(validate=validate.OneOf(["email", "phone"])),
        required=True,
        metadata=doc(
            "What it shares with this lead: `email` (case-insensitive), `phone` (the same "
            "`phoneE164`), or both.",
            example=["email"],
        ),
    )


class DuplicateListSchema(CamelSchema):
    duplicates = fields.List(
        fields.Nested(DuplicateSchema), required=True, metadata=doc("Newest first.")
    )


class DuplicatesEnvelopeSchema(CamelSchema):
    success = fields.Boolean(required=True, metadata=SUCCESS)
    data = fields.Nested(DuplicateListSchema, required=True, metadata=doc("Its duplicates."))


_merge_schema = MergeSchema()
_duplicates_query = DuplicatesQuerySchema()


@Operation(
    operation_id="listLeadDuplicates",
    scope="leads:read",
    tag="leads",
    summary="Find a lead's duplicates",
    description="The chatbot's other leads with this lead's email (case-insensitive) or "
    "phone number (the same `phoneE164`; a phone that does not parse matches nothing), "
    "newest first, each with `matchedOn`. Never another chatbot's leads. A lead merged "
    "into another is a 404 `LEAD_MERGED` naming it.",
    query=DuplicatesQuerySchema,
    responses={200: Response("Its duplicates", DuplicatesEnvelopeSchema)},
    errors=(ValidationFailed, LeadNotFound, LeadMerged, *CHATBOT_ERRORS),
)
async def list_duplicates(request: web.Request) -> web.Response:
    query = load_query(request.query, _duplicates_query)
    found = await request.app[leads_repo_key].duplicates(
        chatbot_id=request[AUTH].chatbot_id,
        lead_id=request.match_info["leadId"],
        limit=query["limit"],
    )
    shown = [{"lead": render_lead(lead), "matchedOn": names} for lead, names in found]
    return ok({"duplicates": shown})


@Operation(
    operation_id="mergeLeads",
    scope="leads:write",
    tag="leads",
    summary="Merge leads into this one",
    description="Merges `sourceIds` into this lead, all or nothing, in one transaction: "
    "its non-null fields win; a field it has null takes the value of the most recently "
    "updated source that has one; `metadata` is the sources' merged oldest-updated first "
    "with this lead's on top (JSON Merge Patch, this lead wins); `statusHistory` holds "
    "every entry in time order (the newest 100); `createdAt` is the earliest. The sources "
    'are deleted as by `DELETE` (each with a `lead.deleted` event, `"reason": "merged"`, '
    "and its personal data gone from every collection); for 30 days their ids answer 404 "
    "`LEAD_MERGED` with `details.mergedInto`. This lead gets a `lead.merged` event "
    "(`data.mergedIds`). A concurrent write to any of them is never lost (the merge or "
    "the write runs again after the other). `If-Match` applies to this lead. With "
    '`"dryRun": true` the answer is the lead the merge would make, and nothing changes. '
    "Takes no query parameters.",
    parameters=(IF_MATCH, IDEMPOTENCY_KEY),
    body=Body(MergeSchema, example={"sourceIds": ["lead_0123456789abcdef"], "dryRun": False}),
    responses={
        200: Response(
            "The merged lead (with dryRun: the lead the merge would make)",
            LeadEnvelopeSchema,
        )
    },
    errors=(
        *BODY_ERRORS,
        LeadNotFound,
        LeadMerged,
        PreconditionFailed,
        *LEAD_IDEMPOTENCY_ERRORS,
        *CHATBOT_ERRORS,
    ),
    error_descriptions={
        404: "This lead or a source does not exist in the chatbot (or was merged: "
        "`LEAD_MERGED`, `details.mergedInto`); nothing was merged",
    },
)
async def merge_leads(request: web.Request) -> web.Response:
    reject_query(request.query)
    body = await read_json_object(request, request.app[appkeys.settings_key].max_body_bytes)
    fields_ = load_fields(_merge_schema, body)
    target = request.match_info["leadId"]
    if target in fields_["source_ids"]:
        raise ValidationFailed(details={"sourceIds": ["A lead cannot be merged into itself."]})
    auth = request[AUTH]
    if_match = request.headers.get("If-Match")
    if fields_["dry_run"]:
        lead = await request.app[leads_repo_key].merge_preview(
            chatbot_id=auth.chatbot_id,
            target_id=target,
            source_ids=fields_["source_ids"],
            if_match=if_match,
        )
        return ok(render_lead(lead))
    write = LeadWrite(
        MERGE,
        {"source_ids": fields_["source_ids"]},
        target,
        if_match=if_match,
        audit={
            "workspaceId": auth.workspace_id,
            "apiKeyId": auth.key.id,
            "requestId": request[REQUEST_ID],
        },
    )
    return await commit_writes(request, [write], OneLead(request[REQUEST_ID]))


def add_merge_routes(app: web.Application) -> None:
    app.router.add_get(LEAD_PATH + "/duplicates", list_duplicates, allow_head=False)
    app.router.add_post(LEAD_PATH + "/merge", merge_leads)
