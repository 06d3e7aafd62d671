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
