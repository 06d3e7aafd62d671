"""The suppression list: people erased on request whose email or phone a workspace must
not capture again.

Kept as keyed hashes, never the address: ``HMAC-SHA256(secret, workspace, kind, value)``
over the folded email or the phone's key (leads/phones.py). Without the secret a hash
cannot be checked against a guessed address. The secret is ``privacy.suppression_secret``
(``SUPPRESSION_SECRET``); unset, one is made on first use and kept in the database
(``server_secrets``), so that every process and a restored dump share it. It must never
change: a suppression made under one secret does not match under another.

A create or upsert checks its email and phone in its own transaction (one indexed read
per transaction of a chatbot's writes, ``by_hash``); see privacy/erasure.py for why an
erasure racing a create in another process cannot leave the person stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .. import ids
from ..errors import SuppressionNotFound
from ..store.client import store_errors
from ..store.driver import ASCENDING, DuplicateKeyError, IndexModel
from ..timeutil import utcnow
from .phones import phone_key
from .rules import fold

EMAIL, PHONE = "email", "phone"  # also the lead fields they are found in
KINDS = (EMAIL, PHONE)
# The stored lead field that holds each kind's normalized value (one index each).
COMPARED_FIELD = {EMAIL: "emailFolded", PHONE: "phoneKey"}
_SECRET_ID = "suppressions"  # noqa: S105 - the id of the document holding it

SUPPRESSION_INDEXES = {
    "suppressions": [
        IndexModel([("workspaceId", ASCENDING), ("hash", ASCENDING)], name="by_hash", unique=True),
        IndexModel([("workspaceId", ASCENDING), ("_id", ASCENDING)], name="by_workspace"),
    ],
}


def normalized(kind: str, value: str, region: str | None = None) -> str | None:
    """What an address of ``kind`` is compared by, in a suppression and on a lead: the
    folded email, or the phone's key (None: a phone without a digit, which no lead can
    be matched by); ``region`` reads a phone written without ``+``."""
    return fold(value) if kind == EMAIL else phone_key(value, region)


def addresses(fields: dict[str, Any], region: str | None = None) -> set[tuple[str, str]]:
    """The (kind, normalized value) pairs of a new lead's fields (its email and phone)."""
    found = set()
    for kind in KINDS:
        raw = fields.get(kind)
        value = normalized(kind, raw, region) if isinstance(raw, str) else None
        if value is not None:
            found.add((kind, value))
    return found


@dataclass(frozen=True)
class Suppression:
    id: str
    kind: str
    created_at: datetime


class SuppressionList:
    """A workspace's suppressions, and the check a write of a lead makes."""

    def __init__(self, db: Any, secret: str = "") -> None:
        self._list = db["suppressions"]
        self._secrets = db["server_secrets"]
        self._secret = secret.encode() if secret else b""

    async def _key(self) -> bytes:
        if not self._secret:
            doc = await self._secrets.find_one({"_id": _SECRET_ID})
            if doc is None:
                try:
                    doc = {"_id": _SECRET_ID, "secret": secrets.token_urlsafe(32)}
                    await self._secrets.insert_one(doc)
                except DuplicateKeyError:  # another process made it first: theirs
                    doc = await self._secrets.find_one({"_id": _SECRET_ID})
            assert doc is not None
            self._secret = str(doc["secret"]).encode()
        return self._secret

    async def digest(self, workspace_id: str, kind: str, value: str) -> str:
        """The keyed hash of an address as a suppression of ``kind`` keeps it."""
        message = f"{workspace_id}\0{kind}\0{value}".encode()
        return hmac.new(await self._key(), message, hashlib.sha256).hexdigest()

    async def suppressed(
        self, session: Any, workspace_id: str, addresses: list[tuple[str, str]]
    ) -> set[tuple[str, str]]:
        """Which of ``addresses`` ((kind, normalized value)) the workspace suppresses: one
        read, in ``session``'s transaction."""
        if not addresses:
            return set()
        by_hash = {
            await self.digest(workspace_id, kind, value): (kind, value) for kind, value in addresses
        }
        found = self._list.find(
            {"workspaceId": workspace_id, "hash": {"$in": sorted(by_hash)}},
            {"hash": 1},
            session=session,
        )
        return {by_hash[doc["hash"]] async for doc in found}

    @store_errors
    async def add(self, workspace_id: str, kind: str, value: str) -> str:
        """Suppress a normalized address (kept when it already is); its id."""
        digest = await self.digest(workspace_id, kind, value)
        doc = {
            "_id": ids.new_id(ids.SUPPRESSION),
            "workspaceId": workspace_id,
            "kind": kind,
            "hash": digest,
            "createdAt": utcnow(),
        }
        try:
            await self._list.insert_one(doc)
        except DuplicateKeyError:
            kept = await self._list.find_one({"workspaceId": workspace_id, "hash": digest})
            if kept is None:  # lifted in between: suppress it again
                return await self.add(workspace_id, kind, value)
            return str(kept["_id"])
        return str(doc["_id"])

    @store_errors
    async def page(
        self, workspace_id: str, *, after: str | None, limit: int
    ) -> tuple[list[Suppression], bool]:
        """The workspace's suppressions in id order after ``after``; whether more follow."""
        query: dict[str, Any] = {"workspaceId": workspace_id}
        if after is not None:
            query["_id"] = {"$gt": after}
        found = self._list.find(query, {"kind": 1, "createdAt": 1}).sort("_id", 1).limit(limit + 1)
        docs = [doc async for doc in found]
        shown = [Suppression(doc["_id"], doc["kind"], doc["createdAt"]) for doc in docs[:limit]]
        return shown, len(docs) > limit

    @store_errors
    async def remove(self, workspace_id: str, suppression_id: str) -> None:
        """Lift one of the workspace's suppressions, or SuppressionNotFound."""
        if not ids.is_id(ids.SUPPRESSION, suppression_id):
            raise SuppressionNotFound()
        result = await self._list.delete_one({"_id": suppression_id, "workspaceId": workspace_id})
        if result.deleted_count != 1:
            raise SuppressionNotFound()
