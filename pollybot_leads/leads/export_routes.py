"""Exporting a chatbot's leads as NDJSON or CSV, streamed as they are read.

The response is sent as the leads are read (leads/export_reads.py, store/walks.py:
bounded reads in creation order, each lead once), each page written with ``await
response.write``, so a slow client slows the reads down instead of filling the server's
memory, and a client that goes away stops them at the next write. Each read has a store
budget of its own (http/deadline.py, StreamBudget): a store that fails before the first
byte is a 503 envelope; one that fails after it cuts the transfer (the connection is closed
before the chunked body's end, which every HTTP client reports as an error). A
complete export ends with the body's proper end; there is no trailer line.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from marshmallow import fields, validate
from multidict import MultiDict, MultiMapping

from ..errors import AppError, ValidationFailed
from ..http.context import AUTH
from ..http.deadline import STREAM_BUDGET, streamed
from ..http.spec import CHATBOT_ERRORS, Operation, Response
from ..timeutil import utcnow
from .export_reads import EXPORT_SORTS
from .queries import LeadQuery
from .query import CursorCodec, LeadListQuerySchema, cursor_codec_key, parse_list_query
from .repository import leads_repo_key
from .routes import lead_json

log = logging.getLogger(__name__)

FORMATS = ("ndjson", "csv")
DEFAULT_FORMAT = "ndjson"
MEDIA_TYPES = {"ndjson": "application/x-ndjson", "csv": "text/csv"}
CSV_COLUMNS = ("id", "name", "email", "phone", "source", "status", "createdAt", "updatedAt")
CSV_HEADER = (*CSV_COLUMNS, "metadata")
# A cell beginning with one of these is a formula to a spreadsheet (CSV injection): it
# is written with a leading apostrophe, which spreadsheets show as text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
NOT_PAGED = ("page", "limit", "cursor")


class LeadExportQuerySchema(LeadListQuerySchema):
    """The list's filters, without paging; the order is creation time only."""

    class Meta(LeadListQuerySchema.Meta):
        exclude = NOT_PAGED

    format = fields.String(
        load_default=DEFAULT_FORMAT,
        validate=validate.OneOf(FORMATS),
        metadata={
            "description": "`ndjson` (one lead per line, as in the list; the default) or "
            "`csv` (a header row, then one lead per row).",
            "example": "csv",
        },
    )
    sort = fields.String(
        load_default="-createdAt",
        validate=validate.OneOf(EXPORT_SORTS),
        metadata={
            "description": "Creation order, newest first (`-createdAt`, the default) or "
            "oldest first. Exports walk this order, which no update changes, so that "
            "every lead appears once while others write; the list's other orders "
            "(`updatedAt`, `name`) are a 400 here."
        },
    )


def parse_export_query(query: MultiMapping[str], codec: CursorCodec) -> tuple[str, LeadQuery]:
    """The format and the filters, or a 400 naming every bad parameter."""
    errors: dict[str, list[str]] = {}
    rest: MultiDict[str] = MultiDict()
    fmt = DEFAULT_FORMAT
    for name in dict.fromkeys(query.keys()):
        values = query.getall(name)
        if name in NOT_PAGED:
            errors[name] = ["Exports are not paged: they stream every matching lead."]
        elif name == "format":
            if len(values) > 1:
                errors[name] = ["Give this parameter once."]
            elif values[0] not in FORMATS:
                errors[name] = [f"Must be one of: {', '.join(FORMATS)}."]
            else:
                fmt = values[0]
        elif name == "sort" and len(values) == 1 and values[0] not in EXPORT_SORTS:
            errors[name] = [
                "Exports run in creation order: createdAt (oldest first) or -createdAt."
            ]
        else:
            rest.extend((name, value) for value in values)
    try:
        lead_query = parse_list_query(rest, codec)
    except ValidationFailed as exc:
        errors.update(exc.details or {})
        lead_query = None
    if errors or lead_query is None:
        raise ValidationFailed("Invalid query parameters", details=errors)
    return fmt, lead_query


def ndjson_lines(leads: list[dict[str, Any]]) -> bytes:
    return "".join(
        json.dumps(lead_json(lead), separators=(",", ":"), ensure_ascii=False) + "\n"
        for lead in leads
    ).encode()


def csv_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_rows(rows: list[list[Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerows([csv_cell(value) for value in row] for row in rows)
    return out.getvalue().encode()


def csv_lines(leads: list[dict[str, Any]]) -> bytes:
    rows = []
    for lead in leads:
        shown = lead_json(lead)
        metadata = json.dumps(shown["metadata"], separators=(",", ":"), ensure_ascii=False)
        rows.append([shown[column] for column in CSV_COLUMNS] + [metadata])
    return csv_rows(rows)


ENCODERS: dict[str, Callable[[list[dict[str, Any]]], bytes]] = {
    "ndjson": ndjson_lines,
    "csv": csv_lines,
}
_EXAMPLE_LEAD = {
    "id": "lead_1234567890abcdef",
    "chatbotId": "cb_1234567890abcdef",
    "workspaceId": "ws_1234567890abcdef",
    "name": "John Doe",
    "email": "john.doe@example.com",
    "phone": "+1-555-123-4567",
    "source": "website",
    "status": "new",
    "metadata": {"utm_source": "google"},
    "createdAt": "2024-01-15T10:30:00.000Z",
    "updatedAt": "2024-01-15T10:30:00.000Z",
}
NDJSON_EXAMPLE = json.dumps(_EXAMPLE_LEAD, separators=(",", ":")) + "\n"
CSV_EXAMPLE = csv_rows([list(CSV_HEADER)]).decode() + (
    "lead_1234567890abcdef,John Doe,john.doe@example.com,'+1-555-123-4567,website,new,"
    '2024-01-15T10:30:00.000Z,2024-01-15T10:30:00.000Z,"{""utm_source"":""google""}"\r\n'
)
CONTENT_DISPOSITION = {
    "Content-Disposition": {
        "description": '`attachment; filename="leads-<chatbotId>-<time>.<format>"`',
        "required": True,
        "schema": {"type": "string"},
    }
}


@Operation(
    operation_id="exportLeads",
    scope="leads:read",
    tag="leads",
    summary="Export leads (NDJSON or CSV, streamed)",
    description="Every lead that matches the filters (the list's, without paging), "
    "streamed as it is read: NDJSON, one lead per line as in the list, or CSV with a "
    "header row `id,name,email,phone,source,status,createdAt,updatedAt,metadata` "
    "(`metadata` as compact JSON; a cell starting with `=`, `+`, `-`, `@`, a tab or a "
    "carriage return is prefixed with `'`, so no spreadsheet runs it as a formula, "
    "phone numbers like `+1-555…` included). Costs one rate-limit token.\n\n"
    "**Exactly once.** The export walks creation order (then id), which no update "
    "changes: every lead that exists for the whole export and matches throughout "
    "appears exactly once, whatever other clients create, update or delete meanwhile; "
    "no lead ever appears twice. Leads created or deleted during the export may or may "
    "not appear. Hence `sort` takes only `-createdAt` (the default) and `createdAt`.\n\n"
    "**Failures.** Bad parameters (and `page`, `limit`, `cursor`) are a 400 before "
    "anything is sent; so is a store that fails before the first byte (503). If the "
    "store fails after the export began, the connection is closed before the body's "
    "end: HTTP clients report a cut transfer (curl exits with 18), and what was "
    "received is not the whole export. A complete export ends with the body's proper "
    "end (no trailer line).\n\n"
    "Metadata filters (`metadata.<key>=<value>`) work as in the list.",
    query=LeadExportQuerySchema,
    responses={
        200: Response(
            "The matching leads, streamed (chunked)",
            content={
                "application/x-ndjson": {"schema": {"type": "string"}, "example": NDJSON_EXAMPLE},
                "text/csv": {"schema": {"type": "string"}, "example": CSV_EXAMPLE},
            },
            headers=CONTENT_DISPOSITION,
        )
    },
    errors=(ValidationFailed, *CHATBOT_ERRORS),
)
@streamed
async def export_leads(request: web.Request) -> web.StreamResponse:
    auth = request[AUTH]
    fmt, query = parse_export_query(request.query, request.app[cursor_codec_key])
    budget = request[STREAM_BUDGET]
    encode = ENCODERS[fmt]
    pages = request.app[leads_repo_key].export(chatbot_id=auth.chatbot_id, query=query)
    try:
        # The first read before any byte: until then a failure is the usual 503.
        page = await budget.step(lambda: anext(pages, None))
        stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
        response = web.StreamResponse(
            headers={
                "Content-Disposition": f'attachment; filename="leads-{auth.chatbot_id}-'
                f'{stamp}.{fmt}"',
                "Cache-Control": "no-store",
            }
        )
        response.content_type = MEDIA_TYPES[fmt]
        if fmt == "csv":
            response.charset = "utf-8"
        budget.begin()
        await response.prepare(request)
        await _stream(request, response, pages, page, encode, header=fmt == "csv")
        return response
    finally:
        with contextlib.suppress(RuntimeError):  # still running in an overrun step
            await pages.aclose()


async def _stream(
    request: web.Request,
    response: web.StreamResponse,
    pages: Any,
    page: list[dict[str, Any]] | None,
    encode: Callable[[list[dict[str, Any]]], bytes],
    *,
    header: bool,
) -> None:
    budget = request[STREAM_BUDGET]
    try:
        if header:
            await response.write(csv_rows([list(CSV_HEADER)]))
        while page is not None:
            if page:
                await response.write(encode(page))  # waits while the client lags behind
            page = await budget.step(lambda: anext(pages, None))
        await response.write_eof()
    except ConnectionResetError:  # the client went away: stop reading
        log.info("export of %s stopped: the client disconnected", request.path)
    except AppError as error:  # a store failure after the first byte: cut the transfer
        log.warning("export of %s cut: %s %s", request.path, error.status, error.code)
        if request.transport is not None:
            request.transport.abort()


def add_export_route(app: web.Application) -> None:
    """Register before the lead routes (whose lead id pattern leaves out ``export``)."""
    app.router.add_get(
        "/api/v1/chatbots/{chatbotId}/leads/export", export_leads, name="export", allow_head=False
    )
