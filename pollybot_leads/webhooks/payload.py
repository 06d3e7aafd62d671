"""The one rendering of a stored event: the feed's items and the deliveries' bodies."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ..leads.event_log import LEAD_CREATED, LEAD_DELETED, LEAD_MERGED, LEAD_UPDATED
from ..leads.routes import lead_json
from ..timeutil import format_ts

EVENT_TYPES = (LEAD_CREATED, LEAD_UPDATED, LEAD_DELETED, LEAD_MERGED)
# PollyBot's own upper-case names, for receivers written against its webhooks.
EVENT_NAMES = {
    LEAD_CREATED: "LEAD_CREATED",
    LEAD_UPDATED: "LEAD_UPDATED",
    LEAD_DELETED: "LEAD_DELETED",
    LEAD_MERGED: "LEAD_MERGED",
}


def _plain(value: Any) -> Any:
    """JSON-ready: datetimes as the API writes them, containers copied."""
    if isinstance(value, datetime):
        return format_ts(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def event_json(doc: dict[str, Any]) -> dict[str, Any]:
    """A stored event as the API and the deliveries show it."""
    data = doc.get("data") or {}
    lead = data.get("lead") or {}
    # A whole lead is rendered exactly as the lead API renders it; a deleted one is {id}
    # (and so is every earlier event of a deleted lead, marked redacted).
    shown: dict[str, Any] = {"lead": lead_json(lead) if "createdAt" in lead else _plain(lead)}
    if "changes" in data:
        shown["changes"] = _plain(data["changes"])
    if data.get("redacted"):
        shown["redacted"] = True
    if "reason" in data:  # lead.deleted by an erasure or a merge
        shown["reason"] = data["reason"]
    if "mergedIds" in data:  # lead.merged: the leads merged into this one
        shown["mergedIds"] = list(data["mergedIds"])
    return {
        "id": doc["_id"],
        "type": doc["type"],
        "event": EVENT_NAMES.get(doc["type"], doc["type"].upper().replace(".", "_")),
        "createdAt": format_ts(doc["createdAt"]),
        "chatbotId": doc["chatbotId"],
        "workspaceId": doc["workspaceId"],
        "sequence": doc["sequence"],
        "data": shown,
    }


def event_body(doc: dict[str, Any]) -> bytes:
    """The bytes a delivery POSTs (and signs): compact UTF-8 JSON."""
    return json.dumps(event_json(doc), separators=(",", ":"), ensure_ascii=False).encode()
