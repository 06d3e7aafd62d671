"""Server-generated identifiers: a prefix and 16 lowercase hex digits from a CSPRNG."""

from __future__ import annotations

import hashlib
import re
import secrets

LEAD, CHATBOT, WORKSPACE, API_KEY = "lead_", "cb_", "ws_", "key_"
SUPPRESSION, ADMIN_KEY = "sup_", "adk_"
SECRET_PREFIX = "sk-workspace_"  # noqa: S105 - the public prefix of every workspace key
ADMIN_SECRET_PREFIX = "sk-admin_"  # noqa: S105 - and of every admin key

_ID_RE = {
    p: re.compile(rf"^{p}[0-9a-f]{{16}}\Z")
    for p in (LEAD, CHATBOT, WORKSPACE, API_KEY, SUPPRESSION, ADMIN_KEY)
}
# token_urlsafe(32) gives 43 characters (256 bits); accept any sane length >= 32.
_SECRET_RE = re.compile(rf"^{SECRET_PREFIX}[A-Za-z0-9_-]{{32,128}}\Z")
_ADMIN_SECRET_RE = re.compile(rf"^{ADMIN_SECRET_PREFIX}[A-Za-z0-9_-]{{32,128}}\Z")


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(8)


def is_id(prefix: str, value: str) -> bool:
    return bool(_ID_RE[prefix].match(value))


def new_secret(prefix: str = SECRET_PREFIX) -> str:
    return prefix + secrets.token_urlsafe(32)


def is_secret(value: str) -> bool:
    """A workspace key's secret, as written (whether any key has it is another matter)."""
    return bool(_SECRET_RE.match(value))


def is_admin_secret(value: str) -> bool:
    return bool(_ADMIN_SECRET_RE.match(value))


def secret_digest(secret: str) -> str:
    """What is stored for a key: the SHA-256 of the whole secret, hex encoded."""
    return hashlib.sha256(secret.encode("ascii")).hexdigest()
