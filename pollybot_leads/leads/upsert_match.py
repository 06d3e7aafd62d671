"""What an upsert matches a lead on (the folded email, the phone in E.164, or the
external id), and the id of the guard that keeps two processes from creating the same
lead at once."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from .phones import to_e164
from .rules import fold


def upsert_guard_id(chatbot_id: str, folded_email: str) -> str:
    """The id of the upsert guard of one (folded) email in one chatbot.

    A hash, keyed with the chatbot id, so that no email is kept in the clear as a
    document id (a guard outlives the lead it guarded: it is kept an hour) and one
    address gives unrelated ids in different chatbots. Every process computes the same
    id for the same email, which is all a guard needs (see Batch._by_email).
    """
    digest = hmac.new(chatbot_id.encode(), folded_email.encode(), hashlib.sha256).hexdigest()
    return f"{chatbot_id}:{digest}"


def upsert_match(
    on: str, fields: dict[str, Any], region: str | None = None
) -> tuple[str, str] | None:
    """The stored field an upsert matches on, and the value its fields give it: the
    folded email, the phone in E.164 (read with the chatbot's ``region`` when written
    without ``+``) or the external id; None when the phone does not parse."""
    if on == "email":
        return "emailFolded", fold(fields["email"])
    if on == "phone":
        e164 = to_e164(fields.get("phone"), region)
        return None if e164 is None else ("phoneKey", e164)
    return "externalId", fields["external_id"]


UPSERT_PHONE_MESSAGE = (
    "An upsert by phone needs a number that parses: with + and its country code, or in "
    "the chatbot's defaultRegion."
)


def guard_key(field: str, value: str) -> str:
    """What a match's guard id is made of (an email's alone, as before phones)."""
    return value if field == "emailFolded" else f"{field}:{value}"
