"""A lead as stored and as shown: its public fields, the fields derived from them (for
sorting and search), and the stored document a create or an update makes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..errors import ValidationFailed
from ..timeutil import MILLISECOND, to_ms
from .metadata import apply_merge_patch, metadata_problems
from .phones import phone_key
from .rules import (
    DEFAULT_STATUS,
    STATUS_HISTORY_LIMIT,
    fold,
    metadata_index_entries,
    search_prefixes,
    search_terms,
)

PUBLIC_FIELDS = (
    "chatbotId",
    "workspaceId",
    "name",
    "email",
    "phone",
    "externalId",
    "source",
    "status",
    "metadata",
    "statusHistory",
    "createdAt",
    "updatedAt",
)
LIST_PROJECTION = {field: 1 for field in PUBLIC_FIELDS if field != "statusHistory"} | {
    "nameSort": 1,
    "phoneKey": 1,  # phoneE164
}
FULL_PROJECTION = {field: 1 for field in PUBLIC_FIELDS} | {"phoneKey": 1}
# Fields earlier versions kept on leads; an update removes them.
LEGACY_FIELDS = ("metadataVersion",)


def to_lead(doc: dict[str, Any]) -> dict[str, Any]:
    lead = {"id": doc["_id"]}
    for field in PUBLIC_FIELDS:
        if field in doc:
            lead[field] = doc[field]
        if field == "phone":  # read-only: the phone in E.164 where it parses
            key = doc.get("phoneKey")
            lead["phoneE164"] = key if isinstance(key, str) and key.startswith("+") else None
    lead.setdefault("phone", None)
    lead.setdefault("externalId", None)
    lead.setdefault("source", None)
    lead.setdefault("metadata", {})
    return lead


def external_id(chatbot_id: str, value: str | None) -> dict[str, Any]:
    """The stored fields of an external id: ``externalId`` (listed by it), and, when set,
    ``externalKey`` (chatbot and id), which a unique index keeps unique: the store refuses
    a second lead of the chatbot with it, whatever the service checked before."""
    if value is None:
        return {"externalId": None}
    return {"externalId": value, "externalKey": f"{chatbot_id}:{value}"}


def derived(name: str, email: str) -> dict[str, Any]:
    """Fields kept beside name and email so that sorting and search use an index."""
    terms = search_terms(name, email)
    return {
        "nameSort": fold(name),
        "emailFolded": fold(email),
        "searchTerms": terms,
        "searchPrefixes": search_prefixes(terms),
    }


def index_entries(doc: dict[str, Any]) -> int:
    """The entries a stored lead has in the multikey indexes (search and metadata): what
    a write of it costs the store beyond a fixed part (docs/api.md, "Batches")."""
    return len(doc.get("searchPrefixes") or ()) + len(doc.get("metadataIndex") or ())


def new_lead_index_entries(fields: dict[str, Any]) -> int:
    """``index_entries`` of the lead that validated create ``fields`` would make."""
    prefixes = search_prefixes(search_terms(fields["name"], fields["email"]))
    return len(prefixes) + len(metadata_index_entries(fields.get("metadata") or {}))


def build_lead_document(
    chatbot_id: str,
    workspace_id: str,
    fields: dict[str, Any],
    now: datetime,
    region: str | None = None,
) -> dict[str, Any]:
    """A new lead as stored (without its ``_id``): validated fields plus derived ones
    (``region``: the chatbot's, for a phone written without ``+``)."""
    status = fields.get("status") or DEFAULT_STATUS
    return {
        "chatbotId": chatbot_id,
        "workspaceId": workspace_id,
        "name": fields["name"],
        "email": fields["email"],
        "phone": fields.get("phone"),
        "phoneKey": phone_key(fields.get("phone"), region),
        **external_id(chatbot_id, fields.get("external_id")),
        "source": fields.get("source"),
        "status": status,
        "metadata": fields.get("metadata") or {},
        "metadataIndex": metadata_index_entries(fields.get("metadata") or {}),
        "statusHistory": [{"status": status, "changedAt": now}],
        "createdAt": now,
        "updatedAt": now,
        **derived(fields["name"], fields["email"]),
    }


def merged_document(
    target: dict[str, Any],
    sources: list[dict[str, Any]],
    now: datetime,
    region: str | None = None,
) -> dict[str, Any]:
    """The stored lead ``target`` with ``sources`` merged into it (contract v1.2, "merge"):
    its non-null fields win; one it has null takes the value of the most recently updated
    source that has one; ``metadata`` is the sources' merged oldest-updated first with the
    target's on top (JSON Merge Patch); ``statusHistory`` holds every entry in time order
    (the newest STATUS_HISTORY_LIMIT); ``createdAt`` is the earliest."""
    after = {k: v for k, v in target.items() if k not in LEGACY_FIELDS}
    newest_first = sorted(sources, key=lambda d: (to_ms(d["updatedAt"]), d["_id"]), reverse=True)
    for field in ("name", "email", "phone", "source", "externalId"):
        if after.get(field) is not None:
            continue
        value = next((s[field] for s in newest_first if s.get(field) is not None), None)
        if field == "externalId":
            after.pop("externalKey", None)
            after.update(external_id(after["chatbotId"], value))
        else:
            after[field] = value
    after.update(derived(after["name"], after["email"]))
    if after.get("phone") != target.get("phone"):  # taken from a source: read it again
        after["phoneKey"] = phone_key(after.get("phone"), region)
    metadata: dict[str, Any] = {}
    for source in reversed(newest_first):
        metadata = apply_merge_patch(metadata, source.get("metadata") or {})
    metadata = apply_merge_patch(metadata, target.get("metadata") or {})
    problems = metadata_problems(metadata)
    if problems:
        raise ValidationFailed("The merged metadata breaks a limit", details=problems)
    after["metadata"] = metadata
    after["metadataIndex"] = metadata_index_entries(metadata)
    history = [entry for doc in (target, *sources) for entry in doc.get("statusHistory") or []]
    history.sort(key=lambda entry: to_ms(entry["changedAt"]))
    after["statusHistory"] = history[-STATUS_HISTORY_LIMIT:]
    after["createdAt"] = min(to_ms(doc["createdAt"]) for doc in (target, *sources))
    previous = target.get("updatedAt")
    after["updatedAt"] = max(now, to_ms(previous) + MILLISECOND) if previous else now
    return after


def apply_update(
    current: dict[str, Any],
    changes: dict[str, Any],
    now: datetime,
    region: str | None = None,
) -> dict[str, Any]:
    """The stored lead ``current`` with ``changes`` applied at ``now`` (a new dict)."""
    after = {k: v for k, v in current.items() if k not in LEGACY_FIELDS}
    for field in ("name", "email", "phone", "source"):
        if field in changes:
            after[field] = changes[field]
    if "external_id" in changes:
        after.pop("externalKey", None)
        after.update(external_id(after["chatbotId"], changes["external_id"]))
    if "name" in changes or "email" in changes:
        after.update(derived(after["name"], after["email"]))
    # Kept in step (and set on leads from before it existed, as they change), with the
    # chatbot's region as it is now.
    after["phoneKey"] = phone_key(after.get("phone"), region)
    if "status" in changes and changes["status"] != current["status"]:
        history = list(current.get("statusHistory") or [])
        # Times of the history never run backwards, even within one millisecond.
        last = to_ms(history[-1]["changedAt"]) if history else None
        changed_at = max(now, last + MILLISECOND) if last else now
        history.append({"status": changes["status"], "changedAt": changed_at})
        after["status"] = changes["status"]
        after["statusHistory"] = history[-STATUS_HISTORY_LIMIT:]
    if "metadata" in changes:
        merged = apply_merge_patch(current.get("metadata") or {}, changes["metadata"])
        problems = metadata_problems(merged)
        if problems:
            raise ValidationFailed("Metadata after the merge breaks a limit", details=problems)
        after["metadata"] = merged
        after["metadataIndex"] = metadata_index_entries(merged)
    # updatedAt always moves forward, even within one millisecond of the last update.
    previous = current.get("updatedAt")
    after["updatedAt"] = max(now, to_ms(previous) + MILLISECOND) if previous else now
    return after
