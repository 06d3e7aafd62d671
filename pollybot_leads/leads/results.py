"""What a lead write answers, rendered from its outcomes alone: the status, body and
headers that are sent, and kept for an ``Idempotency-Key``.

A handler picks the answer for its route before the write (:class:`OneLead`,
:class:`LeadGone`, :class:`BatchResults`); a write with a key renders it inside its own
transaction, which keeps it with the lead (``transaction.Batch.apply``); either way the
handler sends what was rendered. Rendering needs nothing of the request but its id, so
the transaction never calls back into a handler or a middleware.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..errors import AppError
from ..http.errors import error_body
from ..http.responses import JSON_CONTENT_TYPE, ok_body
from ..idempotency.records import StoredResponse
from ..timeutil import format_ts
from .rules import render_lead, rendered_etag
from .writes import Deleted, Outcome, Written

LEADS_PATH = "/api/v1/chatbots/{chatbotId}/leads"
LEAD_PATH = LEADS_PATH + "/{leadId}"


def _success(data: Any, status: int = 200, **extra: Any) -> StoredResponse:
    return StoredResponse(status, ok_body(data, **extra), {"Content-Type": JSON_CONTENT_TYPE})


def _error(error: AppError, request_id: str) -> StoredResponse:
    # As http.errors.error_response renders every other error (aiohttp's json_response).
    body = json.dumps(error_body(error, request_id)).encode()
    return StoredResponse(error.status, body, {"Content-Type": JSON_CONTENT_TYPE, **error.headers})


def item_error(error: AppError) -> dict[str, Any]:
    """One refused item of a batch: its code, message and details."""
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.details:
        body["details"] = error.details
    return body


@dataclass(frozen=True)
class OneLead:
    """Create, upsert, update: the lead written (201 when created, else 200) with its
    ETag and, when new, its Location; or the error that refused the write."""

    request_id: str

    def render(self, outcomes: list[Outcome]) -> StoredResponse:
        outcome = outcomes[0]
        if isinstance(outcome, AppError):
            return _error(outcome, self.request_id)
        assert isinstance(outcome, Written)
        shown = render_lead(outcome.lead)
        result = _success(shown, status=201 if outcome.created else 200)
        result.headers["ETag"] = rendered_etag(shown)
        if outcome.created:
            result.headers["Location"] = LEAD_PATH.format(
                chatbotId=outcome.lead["chatbotId"], leadId=outcome.lead["id"]
            )
        return result


@dataclass(frozen=True)
class LeadGone:
    """Delete: the id and time of the deletion, or the error that refused it."""

    request_id: str

    def render(self, outcomes: list[Outcome]) -> StoredResponse:
        outcome = outcomes[0]
        if isinstance(outcome, AppError):
            return _error(outcome, self.request_id)
        assert isinstance(outcome, Deleted)
        return _success(
            {"id": outcome.lead_id, "deletedAt": format_ts(outcome.deleted_at)},
            message="Lead deleted successfully",
        )


@dataclass(frozen=True)
class BatchResults:
    """A batch: one result per item, in order. ``refused`` holds the items refused before
    the write (by index); the outcomes fill the others, at ``positions``."""

    refused: dict[int, dict[str, Any]]
    positions: tuple[int, ...]

    def render(self, outcomes: list[Outcome]) -> StoredResponse:
        done: dict[int, dict[str, Any]] = dict(self.refused)
        for index, outcome in zip(self.positions, outcomes, strict=True):
            if isinstance(outcome, AppError):
                done[index] = {
                    "index": index,
                    "status": outcome.status,
                    "error": item_error(outcome),
                }
            else:
                assert isinstance(outcome, Written)
                done[index] = {
                    "index": index,
                    "status": 201 if outcome.created else 200,
                    "lead": render_lead(outcome.lead),
                }
        results = [done[index] for index in sorted(done)]
        statuses = [result["status"] for result in results]
        return _success(
            {
                "results": results,
                "created": statuses.count(201),
                "updated": statuses.count(200),
                "failed": sum(1 for status in statuses if status >= 400),
            }
        )
