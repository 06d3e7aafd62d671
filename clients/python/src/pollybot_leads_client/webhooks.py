"""Verify a webhook delivery in a receiver: Standard Webhooks (``webhook-id``,
``webhook-timestamp``, ``webhook-signature: v1,<base64>``) or PollyBot's own pair
(``X-Webhook-Timestamp``, ``X-Webhook-Signature: sha256=<hex>``), whichever the headers
carry, with the endpoint's ``whsec_…`` secret."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from .errors import WebhookVerificationError

TOLERANCE_SECONDS = 300  # a delivery older or newer than this is refused (replays)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def _fresh(timestamp: str | None, now: float, tolerance: int) -> int:
    if timestamp is None or not timestamp.isdigit():
        raise WebhookVerificationError("No valid timestamp header")
    when = int(timestamp)
    if abs(now - when) > tolerance:
        raise WebhookVerificationError("The delivery's timestamp is too old or too new")
    return when


def verify_webhook(
    body: bytes,
    headers: Mapping[str, str],
    secret: str,
    *,
    tolerance: int = TOLERANCE_SECONDS,
    now: float | None = None,
) -> dict[str, Any]:
    """The delivered event, once its signature checks out; else WebhookVerificationError."""
    now = time.time() if now is None else now
    if not secret.startswith("whsec_"):
        raise WebhookVerificationError("The secret must be the endpoint's whsec_… secret")
    standard = _header(headers, "webhook-signature")
    if standard is not None:
        msg_id = _header(headers, "webhook-id") or ""
        when = _fresh(_header(headers, "webhook-timestamp"), now, tolerance)
        try:
            key = base64.b64decode(secret[len("whsec_") :], validate=True)
        except binascii.Error:
            raise WebhookVerificationError("The secret is not valid base64") from None
        signed = f"{msg_id}.{when}.".encode() + body
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        given = [part.split(",", 1)[1] for part in standard.split() if part.startswith("v1,")]
    else:
        own = _header(headers, "X-Webhook-Signature")
        if own is None:
            raise WebhookVerificationError("No signature header")
        when = _fresh(_header(headers, "X-Webhook-Timestamp"), now, tolerance)
        digest = hmac.new(secret.encode(), body + str(when).encode(), hashlib.sha256)
        expected = digest.hexdigest()
        given = [p.strip()[len("sha256=") :] for p in own.split(",") if "sha256=" in p]
    if not any(hmac.compare_digest(expected, candidate) for candidate in given):
        raise WebhookVerificationError("No signature matches")
    try:
        event: dict[str, Any] = json.loads(body)
    except ValueError:
        raise WebhookVerificationError("The body is not JSON") from None
    return event
