"""Schemas of the event feed and the webhook endpoints: requests, queries, responses."""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, fields, validate

from ..http.fields import CamelSchema, QueryInteger, StrictBoolean, Text, each_once
from ..http.responses import TIMESTAMP, doc
from .payload import EVENT_NAMES, EVENT_TYPES
from .targets import URL_MAX, URL_PATTERN

SEQUENCE_MAX = 2**53 - 1  # exact in every JSON reader
CHATBOTS_MAX = 100
DESCRIPTION_MAX = 500
CHATBOT_PATTERN = "cb_[0-9a-f]{16}"
ATTEMPT_PATTERN = "att_[0-9]{13}[0-9a-f]{8}"
_ID = {"pattern": "^wh_[0-9a-f]{16}$", "example": "wh_0123456789abcdef"}


# --- requests ------------------------------------------------------------------------


def url_field(**kwargs: Any) -> Text:
    return Text(
        max_length=URL_MAX,
        pattern=URL_PATTERN,
        pattern_message="Must be an absolute http(s) URL with a host name (no user info, "
        "IPv6 literal or fragment).",
        metadata={
            "description": "Where events are POSTed. `https://` (`http://` only where the "
            "server's configuration allows it); a host name or IPv4 address, optional "
            "port, path and query; no user info, IPv6 literal or fragment. Hosts on "
            "private, loopback and link-local networks are refused (400) unless the "
            "configuration allows them; the addresses are checked again at every "
            f"delivery. At most {URL_MAX} characters.",
            "example": "https://example.com/hooks/pollybot",
        },
        **kwargs,
    )


def events_field(**kwargs: Any) -> fields.List[Any]:
    return fields.List(
        fields.String(validate=validate.OneOf(EVENT_TYPES)),
        validate=[validate.Length(1, len(EVENT_TYPES)), each_once()],
        metadata={
            "description": "The event types delivered to this endpoint, each once "
            "(default: all of them; an endpoint made before `lead.merged` existed keeps "
            "the three it had until it is changed).",
            "uniqueItems": True,
            "example": ["lead.created", "lead.updated"],
        },
        **kwargs,
    )


def chatbots_field(**kwargs: Any) -> fields.List[Any]:
    return fields.List(
        Text(max_length=19, pattern=CHATBOT_PATTERN, pattern_message="Not a chatbot id."),
        validate=[validate.Length(0, CHATBOTS_MAX), each_once()],
        metadata={
            "description": "Deliver only these chatbots' events, each once; each must be a "
            f"chatbot of the key's workspace (else 400). Empty (the default): every "
            f"chatbot of the workspace, those created later included. At most "
            f"{CHATBOTS_MAX}.",
            "uniqueItems": True,
            "example": ["cb_1234567890abcdef"],
        },
        **kwargs,
    )


def description_field(**kwargs: Any) -> Text:
    return Text(
        max_length=DESCRIPTION_MAX,
        allow_none=True,
        metadata={
            "description": f"A note for people: at most {DESCRIPTION_MAX} characters, no "
            "control characters; null: none.",
            "example": "CRM sync",
        },
        **kwargs,
    )


class WebhookCreateSchema(CamelSchema):
    url = url_field(required=True)
    events = events_field(load_default=lambda: list(EVENT_TYPES))
    chatbot_ids = chatbots_field(load_default=list)
    description = description_field(load_default=None)
    enabled = StrictBoolean(
        load_default=True,
        metadata=doc("Whether deliveries go out (default true).", example=True),
    )


class WebhookUpdateSchema(CamelSchema):
    url = url_field()
    events = events_field()
    chatbot_ids = chatbots_field()
    description = description_field()
    enabled = StrictBoolean(
        metadata=doc(
            "false holds deliveries (events are not queued for it meanwhile; use replay); "
            "true resumes them, also after the receiver answered 410.",
            example=True,
        )
    )


class ReplaySchema(CamelSchema):
    after = fields.Integer(
        required=True,
        strict=True,
        validate=validate.Range(0, SEQUENCE_MAX),
        metadata=doc(
            "Queue again every event whose sequence is greater than this, of each of the "
            "endpoint's chatbots (0: every event still in the log).",
            example=0,
        ),
    )


class EventFeedQuerySchema(CamelSchema):
    after = QueryInteger(
        load_default=0,
        validate=validate.Range(0, SEQUENCE_MAX),
        metadata=doc(
            "Return events with a sequence greater than this: 0 for the oldest kept, then "
            "the previous page's pagination.nextAfter.",
            example=0,
        ),
    )
    limit = QueryInteger(
        load_default=100,
        validate=validate.Range(1, 100),
        metadata=doc("Events per page.", example=100),
    )


class AttemptQuerySchema(CamelSchema):
    limit = QueryInteger(
        load_default=50,
        validate=validate.Range(1, 100),
        metadata=doc("Attempts per page.", example=50),
    )
    before = Text(
        max_length=25,
        pattern=ATTEMPT_PATTERN,
        pattern_message="Not an attempt id.",
        metadata=doc(
            "Continue with the attempts older than this one: the previous page's "
            "pagination.nextBefore.",
            example="att_1705314600000a1b2c3d4",
        ),
    )


# --- responses -----------------------------------------------------------------------


class EventDataSchema(CamelSchema):
    class Meta:
        unknown = EXCLUDE

    lead = fields.Dict(
        required=True,
        metadata=doc(
            "lead.created, lead.updated and lead.merged: the whole lead as the lead API "
            'returns it, after the change. lead.deleted: only `{"id"}` (no personal data); '
            "so is every earlier event of a deleted lead (`redacted`).",
            example={"id": "lead_1234567890abcdef", "status": "contacted"},
        ),
    )
    changes = fields.Dict(
        metadata=doc(
            "lead.updated and lead.merged: each changed field with its previous and new value.",
            example={"status": {"from": "new", "to": "contacted"}},
        )
    )
    redacted = fields.Boolean(
        metadata=doc(
            "Present (true) on the earlier events of a lead since deleted: the deletion "
            'reduced their data to `{"lead": {"id"}, "redacted": true}` (same id, type, '
            "sequence and time); deliveries not yet sent carry that form.",
            example=True,
        )
    )
    reason = fields.String(
        metadata=doc(
            "lead.deleted only, when the lead was not deleted by a `DELETE`: `erasure` (a "
            "privacy erasure of its email or phone) or `merged` (merged into the lead of "
            "a lead.merged event of the same commit).",
            enum=["erasure", "merged"],
            example="erasure",
        )
    )
    merged_ids = fields.List(
        fields.String(metadata=doc("A lead's id.", example="lead_0123456789abcdef")),
        metadata=doc(
            "lead.merged only: the leads merged into this one (each now deleted, with a "
            '`lead.deleted` event carrying `"reason": "merged"`).'
        ),
    )


class EventSchema(CamelSchema):
    id = fields.String(
        required=True,
        metadata=doc(
            "The event's id (also the webhook-id header of its deliveries).",
            pattern="^evt_[0-9a-f]{16}$",
            example="evt_0123456789abcdef",
        ),
    )
    type = fields.String(
        required=True,
        validate=validate.OneOf(EVENT_TYPES),
        metadata=doc("What happened.", example="lead.updated"),
    )
    event = fields.String(
        required=True,
        validate=validate.OneOf(tuple(EVENT_NAMES.values())),
        metadata=doc("The same as PollyBot's upper-case event name.", example="LEAD_UPDATED"),
    )
    created_at = fields.String(
        required=True, metadata=doc("When the change was committed (UTC).", **TIMESTAMP)
    )
    chatbot_id = fields.String(
        required=True, metadata=doc("The lead's chatbot.", example="cb_1234567890abcdef")
    )
    workspace_id = fields.String(
        required=True, metadata=doc("The chatbot's workspace.", example="ws_0123456789abcdef")
    )
    sequence = fields.Integer(
        required=True,
        metadata=doc(
            "1, 2, 3... per chatbot, in commit order, without gaps (events older than 30 "
            "days expire).",
            example=42,
        ),
    )
    data = fields.Nested(EventDataSchema, required=True, metadata=doc("The change."))


class EventPaginationSchema(CamelSchema):
    after = fields.Integer(required=True, metadata=doc("The after this page was read with."))
    limit = fields.Integer(required=True, metadata=doc("Events per page.", example=100))
    has_more = fields.Boolean(
        required=True,
        metadata=doc("Whether events follow this page now (more may come later).", example=False),
    )
    next_after = fields.Integer(
        required=True,
        metadata=doc(
            "The after of the next request: the last sequence of this page, or the same "
            "after when the page is empty.",
            example=42,
        ),
    )


class EventPageSchema(CamelSchema):
    events = fields.List(
        fields.Nested(EventSchema), required=True, metadata=doc("Events in sequence order.")
    )
    pagination = fields.Nested(
        EventPaginationSchema, required=True, metadata=doc("Where to continue.")
    )


_SUCCESS = doc("Always true on success.", example=True)


class EventListEnvelopeSchema(CamelSchema):
    success = fields.Boolean(required=True, metadata=_SUCCESS)
    data = fields.Nested(EventPageSchema, required=True, metadata=doc("A page of events."))


class WebhookSchema(CamelSchema):
    id = fields.String(required=True, metadata=doc("The endpoint's id.", **_ID))
    workspace_id = fields.String(
        required=True, metadata=doc("Its workspace.", example="ws_0123456789abcdef")
    )
    url = fields.String(
        required=True, metadata=doc("Where events are POSTed.", example="https://example.com/h")
    )
    description = fields.String(
        required=True, allow_none=True, metadata=doc("A note; null when none.", example="CRM")
    )
    events = fields.List(
        fields.String(validate=validate.OneOf(EVENT_TYPES)),
        required=True,
        metadata=doc("The event types delivered.", example=["lead.created"]),
    )
    chatbot_ids = fields.List(
        fields.String(),
        required=True,
        metadata=doc("Only these chatbots' events; empty: every chatbot's.", example=[]),
    )
    enabled = fields.Boolean(required=True, metadata=doc("Whether deliveries go out."))
    disabled_reason = fields.String(
        required=True,
        allow_none=True,
        metadata=doc(
            "Why the server disabled it (the receiver answered 410); null otherwise.",
            example=None,
        ),
    )
    created_at = fields.String(required=True, metadata=doc("Created (UTC).", **TIMESTAMP))
    updated_at = fields.String(required=True, metadata=doc("Last changed (UTC).", **TIMESTAMP))
    previous_secret_expires_at = fields.String(
        required=True,
        allow_none=True,
        metadata=doc(
            "After a rotation: until when the previous secret still signs too; else null.",
            **TIMESTAMP,
        ),
    )


class WebhookWithSecretSchema(WebhookSchema):
    secret = fields.String(
        required=True,
        metadata=doc(
            "The signing secret: `whsec_` + base64 of 32 random bytes. Shown only in this "
            "answer; keep it to verify deliveries.",
            example="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ),
    )


class WebhookEnvelopeSchema(CamelSchema):
    success = fields.Boolean(required=True, metadata=_SUCCESS)
    data = fields.Nested(WebhookSchema, required=True, metadata=doc("The endpoint."))


class WebhookSecretEnvelopeSchema(CamelSchema):
    success = fields.Boolean(required=True, metadata=_SUCCESS)
    data = fields.Nested(
        WebhookWithSecretSchema, required=True, metadata=doc("The endpoint and its secret.")
    )


class WebhookListSchema(CamelSchema):
    webhooks = fields.List(
        fields.Nested(WebhookSchema), required=True, metadata=doc("Oldest first.")
    )


class WebhookListEnvelopeSchema(CamelSchema):
    success = fields.Boolean(required=True, metadata=_SUCCESS)
    data = fields.Nested(
        WebhookListSchema, required=True, metadata=doc("The workspace's endpoints.")
    )


class WebhookDeletedSchema(CamelSchema):
    id = fields.String(required=True, metadata=doc("The deleted endpoint's id.", **_ID))
    deleted_at = fields.String(required=True, metadata=doc("When it was deleted.", **TIMESTAMP))


class WebhookDeleteEnvelopeSchema(CamelSchema):
    success = fields.Boolean(required=True, metadata=_SUCCESS)
    message = fields.String(
        required=True, metadata=doc("A confirmation.", example="Webhook deleted successfully")
    )
    data = fields.Nested(WebhookDeletedSchema, required=True, metadata=doc("What was deleted."))


class ReplayResultSchema(CamelSchema):
    webhook_id = fields.String(required=True, metadata=doc("The endpoint.", **_ID))
    after = fields.Integer(required=True, metadata=doc("Events after this sequence are queued."))
    chatbot_ids = fields.List(
        fields.String(),
        required=True,
        metadata=doc("The chatbots whose events are replayed.", example=["cb_1234567890abcdef"]),
    )


class ReplayEnvelopeSchema(CamelSchema):
    success = fields.Boolean(required=True, metadata=_SUCCESS)
    data = fields.Nested(ReplayResultSchema, required=True, metadata=doc("What is queued."))


class AttemptSchema(CamelSchema):
    id = fields.String(
        required=True, metadata=doc("The attempt's id.", example="att_1705314600000a1b2c3d4")
    )
    event_id = fields.String(
        required=True, metadata=doc("The event sent.", example="evt_0123456789abcdef")
    )
    event_type = fields.String(required=True, metadata=doc("Its type.", example="lead.created"))
    chatbot_id = fields.String(
        required=True, metadata=doc("Its chatbot.", example="cb_1234567890abcdef")
    )
    sequence = fields.Integer(required=True, metadata=doc("Its sequence.", example=42))
    attempt = fields.Integer(
        required=True, metadata=doc("1 for the first attempt of this delivery, then 2...")
    )
    at = fields.String(required=True, metadata=doc("When it was sent (UTC).", **TIMESTAMP))
    status_code = fields.Integer(
        required=True,
        allow_none=True,
        metadata=doc("The receiver's HTTP status; null when there was none.", example=200),
    )
    error = fields.String(
        required=True,
        allow_none=True,
        metadata=doc(
            "Why there was no status (timeout, connection refused, refused address...).",
            example=None,
        ),
    )
    duration_ms = fields.Integer(
        required=True, metadata=doc("From sending to the answer or error.", example=35)
    )
    outcome = fields.String(
        required=True,
        validate=validate.OneOf(("delivered", "retrying", "failed", "disabled")),
        metadata=doc(
            "delivered (2xx); retrying (another attempt follows); failed (given up after "
            "3 days); disabled (410: the endpoint was disabled).",
            example="delivered",
        ),
    )
    next_attempt_at = fields.String(
        required=True,
        allow_none=True,
        metadata=doc("When the next attempt is due; null when none follows.", **TIMESTAMP),
    )


class AttemptPaginationSchema(CamelSchema):
    limit = fields.Integer(required=True, metadata=doc("Attempts per page.", example=50))
    has_more = fields.Boolean(required=True, metadata=doc("Whether older attempts exist."))
    next_before = fields.String(
        required=True,
        allow_none=True,
        metadata=doc("The before of the next page; null on the last.", example=None),
    )


class AttemptPageSchema(CamelSchema):
    deliveries = fields.List(
        fields.Nested(AttemptSchema), required=True, metadata=doc("Newest first.")
    )
    pagination = fields.Nested(
        AttemptPaginationSchema, required=True, metadata=doc("Where to continue.")
    )


class AttemptListEnvelopeSchema(CamelSchema):
    success = fields.Boolean(required=True, metadata=_SUCCESS)
    data = fields.Nested(AttemptPageSchema, required=True, metadata=doc("Delivery attempts."))
