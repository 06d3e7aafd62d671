"""Idempotency keys: a request's first result, kept durably and replayed to its retries.

A record is ``{_id, scope, fingerprint, state, token, leaseUntil, createdAt, response?}``
(``scope``: the API key's id), its
``_id`` a digest of the API key and the client's key (keys are scoped to the API key).
``begin`` inserts it as *running* under a lease held by a random token; a second request
with the key then gets the stored response (*done*), a 409 (*running*, lease held), a
422 (another method, path or body), or takes over a lease whose holder died.

A lead write completes its record inside the write's own transaction, on the condition
that it still holds the lease (a takeover that came first leaves it nothing to match:
the write is then dropped; one that comes later conflicts with the transaction and then
finds the record done): a crash can never leave a lead written without its record
done, or the other way round. Other results are completed after the fact
(nothing else changed). The store expires records after ``RECORD_TTL_SECONDS``.

A lead write's record also lists the leads its result holds (``leadIds``, indexed). The
transaction that deletes a lead drops every result holding it (``forget_leads``): the
record keeps its ``_id`` and time, and becomes *gone*, without its response or the
fingerprint of its body (a digest of the personal data it carried), so a retry with the
key answers 410 ``LEAD_DELETED`` and creates nothing until the record expires.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from aiohttp import web

from ..errors import IdempotencyInProgress, IdempotencyKeyReused, LeadDeleted, ServiceUnavailable
from ..store.client import store_errors
from ..store.driver import ASCENDING, DuplicateKeyError, IndexModel, WriteConcern
from ..timeutil import utcnow

RECORD_TTL_SECONDS = 24 * 3600
# The store itself expires records.
IDEMPOTENCY_INDEXES = {
    "idempotency_keys": [
        IndexModel(
            [("createdAt", ASCENDING)], name="expiry", expireAfterSeconds=RECORD_TTL_SECONDS
        ),
        # The results holding each lead, for its deletion (forget_leads): sparse, so it
        # holds only the records of lead writes.
        IndexModel([("leadIds", ASCENDING)], name="by_lead", sparse=True),
        # The records of each API key, for its workspace's deletion (admin/deletion.py).
        IndexModel([("scope", ASCENDING)], name="by_scope", sparse=True),
    ],
}
# A record whose result held a lead since deleted.
GONE = "gone"
# How long a running request owns its key; a retry after that may take it over. It is
# well past a request's store budget (and its hard cap), so only a dead process's
# lease expires.
LEASE = timedelta(seconds=10)


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class Lease:
    record_id: str
    token: str


class Answer(Protocol):
    """How a write's outcomes are answered (the leads feature's results module)."""

    def render(self, outcomes: list[Any]) -> StoredResponse: ...


@dataclass
class Receipt:
    """What a write completes in its transaction: the lease, the answer to render from
    the write's outcomes, and, once the transaction kept it, what was kept."""

    lease: Lease
    answer: Answer
    kept: StoredResponse | None = None


def results_holding(lead_ids: list[str]) -> dict[str, Any]:
    """The filter of the kept results holding any of these leads: a read of ``by_lead``."""
    return {"leadIds": {"$in": lead_ids}}


def record_id(scope: str, key: str) -> str:
    return hashlib.sha256(f"{scope}\0{key}".encode()).hexdigest()


class IdempotencyStore:
    def __init__(
        self,
        db: Any,
        *,
        transaction: Callable[[Callable[[Any], Awaitable[Any]]], Awaitable[Any]] | None = None,
    ) -> None:
        """``transaction``: runs a function in a store transaction (``Mongo.transaction``),
        for :meth:`release`; without it a release is a plain delete."""
        self._records = db["idempotency_keys"]
        self._transaction = transaction
        # A running record promises nothing to anyone: it need not wait for the journal
        # (a lost one only makes a retry run the request, whose write then finds no
        # lease and is refused). Done records are journaled.
        self._leases = self._records.with_options(write_concern=WriteConcern(w=1, j=False))

    @store_errors
    async def begin(self, *, scope: str, key: str, fingerprint: str) -> Lease | StoredResponse:
        """A lease to run the request, or the stored response to replay.

        Raises IdempotencyKeyReused (another request's key) or IdempotencyInProgress.
        """
        rid = record_id(scope, key)
        for _ in range(3):
            now = utcnow()
            token = secrets.token_hex(8)
            try:
                await self._leases.insert_one(
                    {
                        "_id": rid,
                        "scope": scope,
                        "fingerprint": fingerprint,
                        "state": "running",
                        "token": token,
                        "leaseUntil": now + LEASE,
                        "createdAt": now,
                    }
                )
                return Lease(rid, token)
            except DuplicateKeyError:
                pass
            found = await self._records.find_one({"_id": rid})
            if found is None:
                continue  # expired meanwhile: insert again
            if found["state"] == GONE:
                raise LeadDeleted()
            if found["fingerprint"] != fingerprint:
                raise IdempotencyKeyReused()
            if found["state"] == "done":
                stored = found["response"]
                return StoredResponse(stored["status"], bytes(stored["body"]), stored["headers"])
            if found["leaseUntil"].replace(tzinfo=now.tzinfo) > now:
                raise IdempotencyInProgress()
            taken = await self._leases.update_one(  # its holder died: take it over
                {"_id": rid, "state": "running", "token": found["token"]},
                {"$set": {"token": token, "leaseUntil": now + LEASE}},
            )
            if taken.modified_count:
                return Lease(rid, token)
        raise IdempotencyInProgress()

    @store_errors
    async def complete(
        self,
        lease: Lease,
        response: StoredResponse,
        session: Any | None = None,
        lead_ids: list[str] | None = None,
    ) -> bool:
        """Keep ``response`` as the key's result; ``lead_ids``: the leads it holds."""
        done: dict[str, Any] = {
            "state": "done",
            "response": {
                "status": response.status,
                "body": response.body,
                "headers": response.headers,
            },
        }
        if lead_ids:
            done["leadIds"] = lead_ids
        result = await self._records.update_one(
            {"_id": lease.record_id, "state": "running", "token": lease.token},
            {"$set": done, "$unset": {"leaseUntil": ""}},
            session=session,
        )
        matched: int = result.matched_count
        return matched == 1

    async def forget_leads(self, lead_ids: list[str], session: Any) -> None:
        """Drop every kept result holding one of these (deleted) leads, in ``session``'s
        transaction: one ``by_lead`` read. The key stays taken (GONE) until it expires."""
        if lead_ids:
            await self._records.update_many(
                results_holding(lead_ids),
                {
                    "$set": {"state": GONE},
                    "$unset": {"response": "", "fingerprint": "", "leadIds": "", "token": ""},
                },
                session=session,
            )

    @store_errors
    async def release(self, lease: Lease) -> None:
        """Forget a running record whose result is not kept (a retry runs afresh).

        In a transaction: the request's own write may still be in the store (a failed
        batch's transaction holds the record until its abort lands), and outside one the
        embedded store retries the delete's conflict with it for as long as that lasts
        (seen: 8 s, while everything else queued behind the store's lock; docs/load.md,
        section 7). In one, the conflict fails at once and the record is left running:
        its lease runs out in 10 s, and a retry meanwhile is told it is in progress."""
        running = {"_id": lease.record_id, "state": "running", "token": lease.token}
        if self._transaction is None:
            await self._records.delete_one(running)
            return
        try:
            await self._transaction(
                lambda session: self._records.delete_one(running, session=session)
            )
        except ServiceUnavailable:  # its write still holds it (or the store is away)
            pass


idempotency_key = web.AppKey("idempotency", IdempotencyStore)
