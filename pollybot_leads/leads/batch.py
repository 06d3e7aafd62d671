"""``POST …/leads/batch``: up to 100 creates (or upserts by email) in one request.

Items are independent: each is validated alone and gets its own result, and the valid
ones commit together in one transaction (with the request's idempotency record).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from marshmallow import fields

from ..errors import AppError, ValidationFailed
from ..http.body import load_fields, read_json_object
from ..http.fields import CamelSchema
from ..http.ratelimit import charge
from ..http.spec import (
    BODY_ERRORS,
    CHATBOT_ERRORS,
    IDEMPOTENCY_KEY,
    LEAD_IDEMPOTENCY_ERRORS,
    Body,
    Operation,
    Response,
)
from ..idempotency.middleware import response_of
from .documents import new_lead_index_entries
from .query import reject_query
from .responses import BatchEnvelopeSchema
from .results import BatchResults, item_error
from .routes import commit_writes, upsert_write
from .schemas import LeadCreateSchema
from .writes import BATCH_MAX_INDEX_ENTRIES, CREATE, UPSERT_ON, LeadWrite, batch_too_heavy

BATCH_MAX_ITEMS = 100
BATCH_MAX_BYTES = 1024 * 1024
_create_schema = LeadCreateSchema()
INDEX_ENTRIES_RULE = (
    f"The leads a batch writes may have at most {BATCH_MAX_INDEX_ENTRIES:,} index entries "
    "in all: a lead has one for each distinct beginning (its first 1-16 characters) of "
    "each word of its name and of its email and their parts (`John Doe`, "
    "`john.doe@example.com` has 33), "
    "and one for each filterable metadata value; a lead an upsert updates counts its "
    "entries before and after the change. Over it the whole batch is a `400` "
    "`VALIDATION_ERROR` (`details.leads` gives the count) and nothing is written: split it."
)


class LeadBatchSchema(CamelSchema):
    # Items are left unconstrained here on purpose: each is validated on its own and a
    # bad one (even a non-object) is a 400 in its own result, not a 400 for the batch.
    leads = fields.List(
        fields.Raw(),
        required=True,
        metadata={
            "description": "1-100 leads, each as the body of a create (the `LeadCreate` "
            "schema). Each item is validated on its own: one that is not a valid lead body "
            "(even one that is not an object) fails alone, with a `400` and its error in "
            "its own result, and the others are still written. (The body itself must be "
            "JSON the server reads: integers anywhere in it fit in 64 bits, or the whole "
            "batch is a `400`.) " + INDEX_ENTRIES_RULE,
            "minItems": 1,
            "maxItems": BATCH_MAX_ITEMS,
        },
    )
    upsert = fields.String(
        metadata={
            "description": "`email`, `phone` or `externalId`: each lead is an upsert, as "
            "`POST …/leads?upsert=…` (merged into the chatbot's newest lead with the same "
            "email, phone number or external id, or created); an item without a phone "
            "that parses, or without an externalId, fails alone with a 400.",
            "enum": list(UPSERT_ON),
        }
    )


def _parse(body: dict[str, Any]) -> tuple[list[Any], str | None]:
    unknown = [name for name in body if name not in ("leads", "upsert")]
    problems: dict[str, list[str]] = {name: ["Unknown field."] for name in unknown}
    items = body.get("leads")
    if not isinstance(items, list) or not 1 <= len(items) <= BATCH_MAX_ITEMS:
        problems["leads"] = [f"Must be a list of 1-{BATCH_MAX_ITEMS} leads."]
    upsert = body.get("upsert")
    if "upsert" in body and upsert not in UPSERT_ON:
        problems["upsert"] = [f"Must be one of {', '.join(UPSERT_ON)}."]
    if problems:
        raise ValidationFailed(details=problems)
    assert isinstance(items, list)
    return items, upsert


@Operation(
    operation_id="createLeadsBatch",
    scope="leads:write",
    tag="leads",
    summary="Create or upsert up to 100 leads",
    description="Each item is validated and written on its own: a bad item fails alone "
    "(its result carries the error) and the others are still written; the answer is a "
    "200 with one result per item, in order. An item whose email or phone the workspace "
    "suppresses (an erasure with `suppress`) fails alone with `SUPPRESSED`. With "
    "`upsert: email` (`phone`, `externalId`) each item is an upsert by it. The batch "
    "costs as many rate-limit tokens as it has items. Body limit 1 MiB; at most "
    f"{BATCH_MAX_INDEX_ENTRIES:,} index entries (see `leads`). Takes no query parameters.",
    parameters=(IDEMPOTENCY_KEY,),
    body=Body(
        LeadBatchSchema,
        example={
            "leads": [
                {"name": "John Doe", "email": "john.doe@example.com", "source": "website"},
                {"name": "Jane Roe", "email": "jane@example.com", "metadata": {"plan": "pro"}},
            ]
        },
    ),
    responses={200: Response("One result per item", BatchEnvelopeSchema)},
    errors=(*BODY_ERRORS, *LEAD_IDEMPOTENCY_ERRORS, *CHATBOT_ERRORS),
)
async def create_leads_batch(request: web.Request) -> web.Response:
    reject_query(request.query)
    body = await read_json_object(request, BATCH_MAX_BYTES)
    items, upsert = _parse(body)
    await charge(request, len(items) - 1)  # one token per item: the request took the first
    refused: dict[int, dict[str, Any]] = {}
    writes: list[LeadWrite] = []
    positions: list[int] = []
    entries = 0
    for index, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise ValidationFailed("Each lead must be a JSON object")
            fields_ = load_fields(_create_schema, item)
            write = upsert_write(fields_, item, upsert) if upsert else LeadWrite(CREATE, fields_)
        except AppError as error:
            refused[index] = {"index": index, "status": error.status, "error": item_error(error)}
            continue
        writes.append(write)
        positions.append(index)
        entries += new_lead_index_entries(fields_)
    if entries > BATCH_MAX_INDEX_ENTRIES:  # up front: the store is not asked
        raise batch_too_heavy(entries, updates=False)
    answer = BatchResults(refused, tuple(positions))
    if not writes:
        return response_of(answer.render([]))
    # Upserts that update leads are counted again in the transaction, with those leads.
    return await commit_writes(request, writes, answer, max_entries=BATCH_MAX_INDEX_ENTRIES)


async def _batch_other_method(request: web.Request) -> web.Response:
    raise web.HTTPMethodNotAllowed(request.method, ["POST"])


def add_batch_route(app: web.Application) -> None:
    """Registered before ``…/leads/{leadId}``, and answering every method, so that
    "batch" is never taken for a lead id (GET, PUT, DELETE here are a 405)."""
    resource = app.router.add_resource("/api/v1/chatbots/{chatbotId}/leads/batch")
    resource.add_route("POST", create_leads_batch)
    resource.add_route("*", _batch_other_method)
