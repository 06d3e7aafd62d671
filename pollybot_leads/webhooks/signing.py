"""Signing secrets and the headers a delivery is signed with.

Two schemes, both on every delivery:

- Standard Webhooks (https://www.standardwebhooks.com): ``webhook-id``,
  ``webhook-timestamp`` (Unix seconds) and ``webhook-signature: v1,<base64 HMAC-SHA256
  of "{id}.{timestamp}.{body}">``, keyed with the secret's bytes (the base64 after
  ``whsec_``); one ``v1,…`` per secret, space-separated, while a rotation is on.
- PollyBot's own pair: ``X-Webhook-Timestamp`` (the same seconds) and
  ``X-Webhook-Signature: sha256=<hex HMAC-SHA256 of body + timestamp>``, keyed with the
  secret string itself; one ``sha256=…`` per secret, comma-separated, newest first.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets

from .. import __version__

SECRET_PREFIX = "whsec_"  # noqa: S105 - the public prefix of every signing secret
SECRET_BYTES = 32
USER_AGENT = f"PollyBot-Leads-Webhooks/{__version__}"
_SECRET_RE = re.compile(r"^whsec_[A-Za-z0-9+/]{32,128}={0,2}\Z")


def new_secret() -> str:
    """``whsec_`` and the base64 of 32 random bytes (Standard Webhooks: 24-64 bytes)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def is_secret(value: str) -> bool:
    return bool(_SECRET_RE.match(value))


def secret_key(secret: str) -> bytes:
    """The bytes Standard Webhooks signs with: the base64 after ``whsec_``."""
    try:
        return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error as exc:  # pragma: no cover - secrets are made by new_secret
        raise ValueError("not a whsec_ secret") from exc


def standard_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def pollybot_signature(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), body + str(timestamp).encode(), hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def signed_headers(
    secrets_newest_first: list[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """Every header of a delivery but Content-Type and Content-Length."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            standard_signature(s, msg_id, timestamp, body) for s in secrets_newest_first
        ),
        "X-Webhook-Timestamp": str(timestamp),
        "X-Webhook-Signature": ", ".join(
            pollybot_signature(s, timestamp, body) for s in secrets_newest_first
        ),
        "User-Agent": USER_AGENT,
    }
