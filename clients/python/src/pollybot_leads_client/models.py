"""Typed, immutable models of what the API answers, with times as ``datetime``.

The field names are the API's in snake case; ``tests/client/test_models.py`` holds them
against the served OpenAPI document, so that neither side can gain or lose a field
unnoticed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


def parse_time(value: str) -> datetime:
    """An API time (ISO 8601, UTC, ``Z``) as an aware ``datetime``."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True, slots=True)
class StatusChange:
    status: str
    changed_at: datetime


@dataclass(frozen=True, slots=True)
class Lead:
    id: str
    chatbot_id: str
    workspace_id: str
    name: str
    email: str
    phone: str | None
    phone_e164: str | None
    external_id: str | None
    source: str | None
    status: str
    metadata: dict[str, Any]
    status_history: tuple[StatusChange, ...]
    created_at: datetime
    updated_at: datetime
    # The lead's version, from the ETag of a single-lead answer (None in lists).
    etag: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any], etag: str | None = None) -> Lead:
        return cls(
            id=data["id"],
            chatbot_id=data["chatbotId"],
            workspace_id=data["workspaceId"],
            name=data["name"],
            email=data["email"],
            phone=data.get("phone"),
            phone_e164=data.get("phoneE164"),
            external_id=data.get("externalId"),
            source=data.get("source"),
            status=data["status"],
            metadata=dict(data.get("metadata") or {}),
            status_history=tuple(
                StatusChange(h["status"], parse_time(h["changedAt"]))
                for h in data.get("statusHistory") or ()
            ),
            created_at=parse_time(data["createdAt"]),
            updated_at=parse_time(data["updatedAt"]),
            etag=etag,
        )


@dataclass(frozen=True, slots=True)
class DeletedLead:
    id: str
    deleted_at: datetime


@dataclass(frozen=True, slots=True)
class Duplicate:
    lead: Lead
    matched_on: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BatchResult:
    index: int
    status: int
    lead: Lead | None
    error: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    type: str
    sequence: int
    chatbot_id: str
    workspace_id: str
    created_at: datetime
    data: dict[str, Any]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        return cls(
            id=data["id"],
            type=data["type"],
            sequence=data["sequence"],
            chatbot_id=data["chatbotId"],
            workspace_id=data["workspaceId"],
            created_at=parse_time(data["createdAt"]),
            data=dict(data["data"]),
        )


def _time_or_none(value: str | None) -> datetime | None:
    return parse_time(value) if value else None


@dataclass(frozen=True, slots=True)
class Webhook:
    id: str
    workspace_id: str
    url: str
    description: str | None
    events: tuple[str, ...]
    chatbot_ids: tuple[str, ...]
    enabled: bool
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime
    previous_secret_expires_at: datetime | None
    # The signing secret: only in the answer of a create or a rotation.
    secret: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Webhook:
        return cls(
            id=data["id"],
            workspace_id=data["workspaceId"],
            url=data["url"],
            description=data.get("description"),
            events=tuple(data["events"]),
            chatbot_ids=tuple(data.get("chatbotIds") or ()),
            enabled=data["enabled"],
            disabled_reason=data.get("disabledReason"),
            created_at=parse_time(data["createdAt"]),
            updated_at=parse_time(data["updatedAt"]),
            previous_secret_expires_at=_time_or_none(data.get("previousSecretExpiresAt")),
            secret=data.get("secret"),
        )


@dataclass(frozen=True, slots=True)
class Attempt:
    id: str
    event_id: str
    event_type: str
    chatbot_id: str
    sequence: int
    attempt: int
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: float
    outcome: str
    next_attempt_at: datetime | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Attempt:
        return cls(
            id=data["id"],
            event_id=data["eventId"],
            event_type=data["eventType"],
            chatbot_id=data["chatbotId"],
            sequence=data["sequence"],
            attempt=data["attempt"],
            at=parse_time(data["at"]),
            status_code=data.get("statusCode"),
            error=data.get("error"),
            duration_ms=data["durationMs"],
            outcome=data["outcome"],
            next_attempt_at=_time_or_none(data.get("nextAttemptAt")),
        )


# --- privacy -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Erasure:
    erased: int
    lead_ids: tuple[str, ...]
    suppressed: bool

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Erasure:
        return cls(data["erased"], tuple(data["leadIds"]), data["suppressed"])


@dataclass(frozen=True, slots=True)
class Suppression:
    id: str
    kind: str  # "email" or "phone"; the address itself is never shown
    created_at: datetime

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Suppression:
        return cls(data["id"], data["kind"], parse_time(data["createdAt"]))


# --- the admin API -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Deletion:
    """A workspace's or chatbot's deletion job: running, then done (then it is a 404)."""

    state: str
    requested_at: datetime
    removed: dict[str, int]
    finished_at: datetime | None

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Deletion | None:
        if data is None:
            return None
        return cls(
            data["state"],
            parse_time(data["requestedAt"]),
            dict(data["removed"]),
            _time_or_none(data.get("finishedAt")),
        )


@dataclass(frozen=True, slots=True)
class WorkspaceCounts:
    chatbots: int
    keys: int
    leads: int


@dataclass(frozen=True, slots=True)
class Workspace:
    id: str
    name: str
    status: str
    created_at: datetime
    # Only in a single workspace's answer (None in lists).
    counts: WorkspaceCounts | None = None
    deletion: Deletion | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Workspace:
        counts = data.get("counts")
        return cls(
            id=data["id"],
            name=data["name"],
            status=data["status"],
            created_at=parse_time(data["createdAt"]),
            counts=WorkspaceCounts(**counts) if counts else None,
            deletion=Deletion.from_json(data.get("deletion")),
        )


@dataclass(frozen=True, slots=True)
class Chatbot:
    id: str
    workspace_id: str
    name: str
    default_region: str | None
    status: str
    created_at: datetime
    deletion: Deletion | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Chatbot:
        return cls(
            id=data["id"],
            workspace_id=data["workspaceId"],
            name=data["name"],
            default_region=data.get("defaultRegion"),
            status=data["status"],
            created_at=parse_time(data["createdAt"]),
            deletion=Deletion.from_json(data.get("deletion")),
        )


@dataclass(frozen=True, slots=True)
class KeyRateLimit:
    capacity: int
    refill_per_second: float


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    workspace_id: str
    name: str | None
    created_at: datetime
    revoked: bool
    revoked_at: datetime | None
    scopes: tuple[str, ...]
    chatbot_ids: tuple[str, ...] | None
    expires_at: datetime | None
    rate_limit: KeyRateLimit | None
    last_used_at: datetime | None
    # The secret: only in the answer of a create or a roll.
    key: str | None = None
    # After a roll: until when the previous secret still works.
    old_key_expires_at: datetime | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ApiKey:
        limit = data.get("rateLimit")
        chatbots = data.get("chatbotIds")
        return cls(
            id=data["id"],
            workspace_id=data["workspaceId"],
            name=data.get("name"),
            created_at=parse_time(data["createdAt"]),
            revoked=data["revoked"],
            revoked_at=_time_or_none(data.get("revokedAt")),
            scopes=tuple(data["scopes"]),
            chatbot_ids=tuple(chatbots) if chatbots is not None else None,
            expires_at=_time_or_none(data.get("expiresAt")),
            rate_limit=KeyRateLimit(limit["capacity"], limit["refillPerSecond"]) if limit else None,
            last_used_at=_time_or_none(data.get("lastUsedAt")),
            key=data.get("key"),
            old_key_expires_at=_time_or_none(data.get("oldKeyExpiresAt")),
        )


@dataclass(frozen=True, slots=True)
class AuditActor:
    type: str  # "adminKey", "cli" or "apiKey"
    id: str | None


@dataclass(frozen=True, slots=True)
class AuditTarget:
    type: str
    id: str
    workspace_id: str | None
    chatbot_id: str | None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: str
    action: str
    at: datetime
    actor: AuditActor
    target: AuditTarget
    request_id: str | None
    details: dict[str, Any] | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AuditEntry:
        target = data["target"]
        return cls(
            id=data["id"],
            action=data["action"],
            at=parse_time(data["at"]),
            actor=AuditActor(data["actor"]["type"], data["actor"].get("id")),
            target=AuditTarget(
                target["type"], target["id"], target.get("workspaceId"), target.get("chatbotId")
            ),
            request_id=data.get("requestId"),
            details=data.get("details"),
        )
