"""The admin API's bodies, queries and answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from ..accounts.repository import ROLL_OVERLAP_MAX_SECONDS
from ..http.context import SCOPES
from ..http.fields import NON_BLANK, CamelSchema, QueryInteger, Text, each_once
from ..http.responses import SUCCESS, TIMESTAMP, after_pagination, doc
from ..leads.phones import is_region
from ..leads.query import UtcDateTime
from ..timeutil import utcnow
from ..webhooks.schemas import CHATBOT_PATTERN, CHATBOTS_MAX

NAME_MAX = 200
_WS_ID = {"pattern": "^ws_[0-9a-f]{16}$", "example": "ws_1234567890abcdef"}
_CB_ID = {"pattern": "^cb_[0-9a-f]{16}$", "example": "cb_1234567890abcdef"}
_KEY_ID = {"pattern": "^key_[0-9a-f]{16}$", "example": "key_1234567890abcdef"}
_AUDIT_ID = {"pattern": "^aud_[0-9a-f]{16}$", "example": "aud_0123456789abcdef"}


def _region(code: str | None) -> None:
    if code is not None and not is_region(code):
        raise ValidationError("Not a region the phone-number library knows (e.g. US, GB, DE).")


def _future(when: datetime | None) -> None:
    if when is not None and when <= utcnow():
        raise ValidationError("Must be in the future.")


def name_field(what: str, **kwargs: Any) -> Text:
    return Text(
        max_length=NAME_MAX,
        min_length=1,
        pattern=NON_BLANK,
        pattern_message="Must not be blank.",
        trim=True,
        metadata=doc(f"The {what}'s name: 1-{NAME_MAX} characters, not blank.", example="Acme"),
        **kwargs,
    )


def region_field(**kwargs: Any) -> Text:
    return Text(
        max_length=2,
        pattern="[A-Z]{2}",
        pattern_message="Must be a two-letter region code in capitals (e.g. US).",
        allow_none=True,
        validate=_region,
        metadata=doc(
            "The region (ISO 3166-1 alpha-2) whose numbering plan reads this chatbot's "
            "phone numbers written without `+` (`phoneE164`); null: such numbers stay "
            "unparsed.",
            example="US",
        ),
        **kwargs,
    )


# --- requests ----------------------------------------------------------------------


class WorkspaceCreateSchema(CamelSchema):
    name = name_field("workspace", required=True)


class ChatbotCreateSchema(CamelSchema):
    name = name_field("chatbot", required=True)
    default_region = region_field(load_default=None)


class ChatbotUpdateSchema(CamelSchema):
    name = name_field("chatbot")
    default_region = region_field()


class RateLimitSchema(CamelSchema):
    capacity = fields.Integer(
        required=True,
        strict=True,
        validate=validate.Range(1, 1_000_000),
        metadata=doc("The key's bucket capacity (its burst).", example=120),
    )
    refill_per_second = fields.Float(
        required=True,
        allow_nan=False,
        validate=validate.Range(0.001, 1_000_000),
        metadata=doc("Tokens added per second.", example=10.0),
    )


class _KeyFields(CamelSchema):
    name = Text(
        max_length=NAME_MAX,
        allow_none=True,
        metadata=doc("A label (the integration using it); null: none.", example="Analytics"),
    )
    scopes = fields.List(
        fields.String(validate=validate.OneOf(SCOPES)),
        validate=[validate.Length(1, len(SCOPES)), each_once()],
        metadata=doc(
            "What it may do, each once (default: all). " + ", ".join(f"`{s}`" for s in SCOPES),
            uniqueItems=True,
            example=["leads:read"],
        ),
    )
    chatbot_ids = fields.List(
        Text(max_length=19, pattern=CHATBOT_PATTERN, pattern_message="Not a chatbot id."),
        allow_none=True,
        validate=[validate.Length(1, CHATBOTS_MAX), each_once()],
        metadata=doc(
            "The only chatbots it may touch, each a chatbot of the workspace (else 404); "
            "others answer 404 to it, and it cannot use workspace-wide routes. "
            "null (the default): every chatbot of the workspace.",
            uniqueItems=True,
            example=["cb_1234567890abcdef"],
        ),
    )
    expires_at = UtcDateTime(
        allow_none=True,
        validate=_future,
        metadata=doc("When it stops working (in the future); null: never.", **TIMESTAMP),
    )
    rate_limit = fields.Nested(
        RateLimitSchema,
        allow_none=True,
        metadata=doc("Its own rate limit; null: the server's default."),
    )


class KeyCreateSchema(_KeyFields):
    pass


class KeyUpdateSchema(_KeyFields):
    pass


class KeyRollSchema(CamelSchema):
    expire_old_in_seconds = fields.Integer(
        strict=True,
        load_default=0,
        validate=validate.Range(0, ROLL_OVERLAP_MAX_SECONDS),
        metadata=doc(
            "How long the current secret keeps working beside the new one, in seconds "
            f"(0-{ROLL_OVERLAP_MAX_SECONDS}; 0, the default: it stops at once).",
            example=3600,
        ),
    )


class WorkspaceQuerySchema(CamelSchema):
    limit = QueryInteger(
        load_default=20, validate=validate.Range(1, 100), metadata=doc("Per page.", example=20)
    )
    cursor = Text(
        max_length=19,
        pattern="ws_[0-9a-f]{16}",
        pattern_message="Not a cursor of this list.",
        metadata=doc("The previous page's pagination.nextCursor.", example="ws_1234567890abcdef"),
    )


class AuditQuerySchema(CamelSchema):
    limit = QueryInteger(
        load_default=100, validate=validate.Range(1, 1000), metadata=doc("Per page.", example=100)
    )
    after = Text(
        max_length=20,
        pattern="aud_[0-9a-f]{16}",
        pattern_message="Not an audit record id.",
        metadata=doc("Continue after this record: the previous page's pagination.nextAfter."),
    )


# --- answers ------------------------------------------------------------------------


def _envelope(name: str, data: type[Schema], what: str) -> type[Schema]:
    nested = fields.Nested(data, required=True, metadata=doc(what))
    attrs = {"success": fields.Boolean(required=True, metadata=SUCCESS), "data": nested}
    return type(name, (CamelSchema,), attrs)


class DeletionSchema(CamelSchema):
    state = fields.String(
        required=True,
        validate=validate.OneOf(["running", "done"]),
        metadata=doc("The deletion job's state.", example="running"),
    )
    requested_at = fields.String(required=True, metadata=doc("When it was asked.", **TIMESTAMP))
    removed = fields.Dict(
        keys=fields.String(),
        values=fields.Integer(),
        required=True,
        metadata=doc("Documents removed so far, by collection.", example={"leads": 1200}),
    )
    finished_at = fields.String(
        required=True, allow_none=True, metadata=doc("When it ended; null: running.", **TIMESTAMP)
    )


class WorkspaceSchema(CamelSchema):
    id = fields.String(required=True, metadata=doc("The workspace's id.", **_WS_ID))
    name = fields.String(required=True, metadata=doc("Its name.", example="Acme"))
    status = fields.String(
        required=True,
        validate=validate.OneOf(["active", "deleting"]),
        metadata=doc("`deleting` from its deletion until it is gone (then 404).", example="active"),
    )
    created_at = fields.String(required=True, metadata=doc("When it was made.", **TIMESTAMP))


class CountsSchema(CamelSchema):
    chatbots = fields.Integer(required=True, metadata=doc("Its chatbots.", example=1))
    keys = fields.Integer(required=True, metadata=doc("Its keys not revoked.", example=2))
    leads = fields.Integer(required=True, metadata=doc("Leads of all its chatbots.", example=0))


class WorkspaceDetailSchema(WorkspaceSchema):
    counts = fields.Nested(CountsSchema, required=True, metadata=doc("What it holds."))
    deletion = fields.Nested(
        DeletionSchema,
        required=True,
        allow_none=True,
        metadata=doc("Its deletion's progress; null unless it is being deleted."),
    )


WorkspacePaginationSchema = after_pagination("WorkspacePaginationSchema", "cursor", _WS_ID)


class WorkspacePageSchema(CamelSchema):
    workspaces = fields.List(
        fields.Nested(WorkspaceSchema), required=True, metadata=doc("In id order.")
    )
    pagination = fields.Nested(
        WorkspacePaginationSchema, required=True, metadata=doc("The next page.")
    )


class ChatbotSchema(CamelSchema):
    id = fields.String(required=True, metadata=doc("The chatbot's id.", **_CB_ID))
    workspace_id = fields.String(required=True, metadata=doc("Its workspace.", **_WS_ID))
    name = fields.String(required=True, metadata=doc("Its name.", example="Website bot"))
    default_region = fields.String(
        required=True,
        allow_none=True,
        metadata=doc("The region reading its numbers without `+`; null: none.", example="US"),
    )
    status = fields.String(
        required=True,
        validate=validate.OneOf(["active", "deleting"]),
        metadata=doc("`deleting` from its deletion until it is gone (then 404).", example="active"),
    )
    created_at = fields.String(required=True, metadata=doc("When it was made.", **TIMESTAMP))


class ChatbotDetailSchema(ChatbotSchema):
    deletion = fields.Nested(
        DeletionSchema,
        required=True,
        allow_none=True,
        metadata=doc("Its deletion's progress; null unless it is being deleted."),
    )


class ChatbotListSchema(CamelSchema):
    chatbots = fields.List(
        fields.Nested(ChatbotSchema), required=True, metadata=doc("In id order.")
    )


class KeyRateLimitSchema(CamelSchema):
    capacity = fields.Integer(
        required=True, allow_none=True, metadata=doc("Capacity.", example=120)
    )
    refill_per_second = fields.Float(
        required=True, allow_none=True, metadata=doc("Tokens per second.", example=10.0)
    )


class KeySchema(CamelSchema):
    id = fields.String(required=True, metadata=doc("The key's id.", **_KEY_ID))
    workspace_id = fields.String(required=True, metadata=doc("Its workspace.", **_WS_ID))
    name = fields.String(required=True, allow_none=True, metadata=doc("Its label.", example="CRM"))
    created_at = fields.String(required=True, metadata=doc("When it was made.", **TIMESTAMP))
    revoked = fields.Boolean(required=True, metadata=doc("Revoked: refused.", example=False))
    revoked_at = fields.String(
        required=True, allow_none=True, metadata=doc("When it was revoked.", **TIMESTAMP)
    )
    scopes = fields.List(
        fields.String(validate=validate.OneOf(SCOPES)),
        required=True,
        metadata=doc("What it may do.", example=list(SCOPES)),
    )
    chatbot_ids = fields.List(
        fields.String(metadata=_CB_ID),
        required=True,
        allow_none=True,
        metadata=doc("The only chatbots it may touch; null: all of the workspace's."),
    )
    expires_at = fields.String(
        required=True, allow_none=True, metadata=doc("When it stops working.", **TIMESTAMP)
    )
    rate_limit = fields.Nested(
        KeyRateLimitSchema,
        required=True,
        allow_none=True,
        metadata=doc("Its own rate limit; null: the default."),
    )
    last_used_at = fields.String(
        required=True,
        allow_none=True,
        metadata=doc("When it was last used (moved at most once a minute).", **TIMESTAMP),
    )


class IssuedKeySchema(KeySchema):
    key = fields.String(
        required=True,
        metadata=doc(
            "The secret, shown only in this answer: `Authorization: Bearer <key>`.",
            example="sk-workspace_0123456789abcdef0123456789abcdef0123456",
        ),
    )


class RolledKeySchema(IssuedKeySchema):
    old_key_expires_at = fields.String(
        required=True,
        allow_none=True,
        metadata=doc("When the previous secret stops working; null: it already has.", **TIMESTAMP),
    )


class KeyListSchema(CamelSchema):
    keys = fields.List(
        fields.Nested(KeySchema), required=True, metadata=doc("Oldest first; never secrets.")
    )


class AuditActorSchema(CamelSchema):
    type = fields.String(
        required=True,
        validate=validate.OneOf(["adminKey", "cli", "apiKey"]),
        metadata=doc("An admin key, the CLI, or a workspace key.", example="adminKey"),
    )
    id = fields.String(
        required=True, allow_none=True, metadata=doc("The key's id (null: the CLI).")
    )


class AuditTargetSchema(CamelSchema):
    type = fields.String(
        required=True,
        validate=validate.OneOf(["workspace", "chatbot", "apiKey", "adminKey", "lead"]),
        metadata=doc("What was acted on.", example="workspace"),
    )
    id = fields.String(required=True, metadata=doc("Its id.", example="ws_1234567890abcdef"))
    workspace_id = fields.String(
        required=True, allow_none=True, metadata=doc("Its workspace (null: none).", **_WS_ID)
    )
    chatbot_id = fields.String(
        required=True, allow_none=True, metadata=doc("Its chatbot (a lead's; else null).", **_CB_ID)
    )


class AuditEntrySchema(CamelSchema):
    id = fields.String(required=True, metadata=doc("The record's id.", **_AUDIT_ID))
    action = fields.String(
        required=True,
        metadata=doc(
            "`workspace.create`, `workspace.delete`, `workspace.deleted` (its job done), "
            "`chatbot.…` likewise and `chatbot.update`, `key.create`, `key.update`, "
            "`key.revoke`, `key.roll`, `adminKey.create`, `adminKey.revoke`, `lead.delete`.",
            example="key.create",
        ),
    )
    at = fields.String(required=True, metadata=doc("When.", **TIMESTAMP))
    actor = fields.Nested(AuditActorSchema, required=True, metadata=doc("Who acted."))
    target = fields.Nested(AuditTargetSchema, required=True, metadata=doc("What on."))
    request_id = fields.String(
        required=True, allow_none=True, metadata=doc("The request's X-Request-Id.")
    )
    details = fields.Dict(
        required=True,
        allow_none=True,
        metadata=doc("Names, scopes, counts and times of the change; never a secret."),
    )


AuditPaginationSchema = after_pagination("AuditPaginationSchema", "after", _AUDIT_ID)


class AuditPageSchema(CamelSchema):
    entries = fields.List(
        fields.Nested(AuditEntrySchema), required=True, metadata=doc("Oldest first.")
    )
    pagination = fields.Nested(AuditPaginationSchema, required=True, metadata=doc("The next page."))


WorkspaceEnvelopeSchema = _envelope(
    "WorkspaceEnvelopeSchema", WorkspaceDetailSchema, "The workspace."
)
WorkspacePageEnvelopeSchema = _envelope(
    "WorkspacePageEnvelopeSchema", WorkspacePageSchema, "A page."
)
ChatbotEnvelopeSchema = _envelope("ChatbotEnvelopeSchema", ChatbotDetailSchema, "The chatbot.")
ChatbotListEnvelopeSchema = _envelope(
    "ChatbotListEnvelopeSchema", ChatbotListSchema, "Its chatbots."
)
KeyEnvelopeSchema = _envelope("KeyEnvelopeSchema", KeySchema, "The key.")
IssuedKeyEnvelopeSchema = _envelope("IssuedKeyEnvelopeSchema", IssuedKeySchema, "The new key.")
RolledKeyEnvelopeSchema = _envelope("RolledKeyEnvelopeSchema", RolledKeySchema, "The rolled key.")
KeyListEnvelopeSchema = _envelope("KeyListEnvelopeSchema", KeyListSchema, "Its keys.")
AuditPageEnvelopeSchema = _envelope("AuditPageEnvelopeSchema", AuditPageSchema, "A page.")
