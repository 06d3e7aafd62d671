"""One transaction of a chatbot's lead writes: the units a group commit gathered,
applied in order to the leads as read in the transaction, then written out together."""

from __future__ import annotations

import builtins
from typing import Any

from .. import ids
from ..errors import (
    AppError,
    DuplicateExternalId,
    LeadMerged,
    LeadNotFound,
    PreconditionFailed,
    Suppressed,
    ValidationFailed,
)
from ..store.driver import DeleteOne, UpdateOne
from ..timeutil import to_ms, utcnow
from .counters import Bounds, Claim, pair_key
from .documents import (
    apply_update,
    build_lead_document,
    index_entries,
    merged_document,
    to_lead,
)
from .event_log import (
    LEAD_CREATED,
    LEAD_DELETED,
    LEAD_MERGED,
    LEAD_UPDATED,
    lead_changes,
    redacted,
)
from .phones import DIGITS
from .rules import etag_matches, lead_etag
from .suppressions import addresses as new_addresses
from .units import LeadStores, LeaseLost, TooHeavy, Unit
from .upsert_match import UPSERT_PHONE_MESSAGE, guard_key, upsert_guard_id, upsert_match
from .writes import (
    CREATE,
    DELETE,
    ERASE,
    ERASE_CHUNK,
    MERGE,
    UPDATE,
    UPSERT,
    Deleted,
    Erased,
    LeadWrite,
    Outcome,
    Written,
    batch_too_heavy,
)


class Batch:
    """One attempt of one transaction: the units' writes applied in order to the leads
    as read in the transaction (and as earlier writes of the batch left them), then
    written out together by ``flush``."""

    def __init__(
        self, stores: LeadStores, session: Any, chatbot_id: str, region: str | None = None
    ) -> None:
        self.stores, self.session, self.chatbot_id = stores, session, chatbot_id
        self.region = region  # the chatbot's defaultRegion: reads phones without "+"
        self.now = utcnow()
        self.workspace_id = ""
        self.states: dict[str, dict[str, Any] | None] = {}  # lead id -> now (None: gone)
        self.stored: dict[str, dict[str, Any] | None] = {}  # lead id -> as read (None: new)
        self.counts: dict[str, int] = {}
        self.bounds = Bounds()
        self.audits: list[dict[str, Any]] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.guarded: set[str] = set()
        self.deleted: list[str] = []  # lead ids this batch deleted (their copies go too)
        self.deleted_guards: set[str] = set()  # the upsert guards of their emails
        self.missing: set[str] = set()  # lead ids read and not this chatbot's
        # (field, value) an upsert matches on -> the leads read with it
        self.by_match: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.entries = 0  # index entries written so far (updated leads: before and after)
        self.suppressed: set[tuple[str, str]] = set()  # (kind, value) new leads may not have
        self.erasing = False  # an erasure ran: the chatbot's event sequence is written
        self.external_holders: dict[str, str] = {}  # external id -> the stored lead with it
        self.tombstones: list[dict[str, Any]] = []  # of the leads merges removed

    async def prefetch(self, units: list[Unit]) -> None:
        """Read what many writes need in one round trip each, rather than one per write:
        the leads that updates and deletes name, and the leads (and guards) of the
        emails, phones and external ids that upserts match on."""
        lead_ids = sorted(
            {
                write.lead_id
                for unit in units
                for write in unit.writes
                if write.kind in (UPDATE, DELETE)
                and write.lead_id
                and ids.is_id(ids.LEAD, write.lead_id)
            }
        )
        if len(lead_ids) > 1:  # one is read as it comes (the same round trip)
            found = self.stores.leads.find({"_id": {"$in": lead_ids}}, session=self.session)
            async for doc in found:
                if doc.get("chatbotId") == self.chatbot_id:
                    self._read(doc)
            self.missing.update(i for i in lead_ids if i not in self.states)
        await self._read_suppressions(units)
        await self._read_external_ids(units)
        found_matches = {
            upsert_match(w.on, w.fields, self.region)
            for unit in units
            for w in unit.writes
            if w.kind == UPSERT
        }
        matches = sorted(m for m in found_matches if m is not None)
        if matches:
            await self._guard([guard_key(field, value) for field, value in matches])
            self.by_match = {match: [] for match in matches}
            for field in sorted({field for field, _ in matches}):
                found = self.stores.leads.find(
                    {
                        "chatbotId": self.chatbot_id,
                        field: {"$in": [value for f, value in matches if f == field]},
                    },
                    session=self.session,
                )
                async for doc in found:
                    self.by_match[field, doc[field]].append(doc)

    async def _read_suppressions(self, units: list[Unit]) -> None:
        """Which of the new leads' emails and phones the workspace suppresses (one read,
        in the transaction: a suppression committed before it is seen)."""
        addresses: set[tuple[str, str]] = set()
        workspace_id = ""
        for unit in units:
            for write in unit.writes:
                if write.kind in (CREATE, UPSERT):
                    workspace_id = workspace_id or unit.workspace_id
                    addresses.update(new_addresses(write.fields, self.region))
        if addresses:
            self.suppressed = await self.stores.suppressions.suppressed(
                self.session, workspace_id, sorted(addresses)
            )

    async def _read_external_ids(self, units: list[Unit]) -> None:
        """Which stored leads of the chatbot hold the external ids the writes set (one
        read of ``by_external_id``; the unique index on ``externalKey`` backs it up)."""
        wanted = sorted(
            {
                write.fields["external_id"]
                for unit in units
                for write in unit.writes
                if write.kind in (CREATE, UPSERT, UPDATE)
                and isinstance(write.fields.get("external_id"), str)
            }
        )
        if wanted:
            found = self.stores.leads.find(
                {"chatbotId": self.chatbot_id, "externalId": {"$in": wanted}},
                {"externalId": 1},
                session=self.session,
            )
            self.external_holders = {doc["externalId"]: doc["_id"] async for doc in found}

    def _check_external_id(self, lead_id: str | None, fields: dict[str, Any]) -> None:
        """DuplicateExternalId when another lead of the chatbot has the external id that
        ``fields`` give the lead ``lead_id`` (None: a new lead), as this batch left them."""
        value = fields.get("external_id")
        if value is None:
            return
        for other, state in self.states.items():
            if other != lead_id and state is not None and state.get("externalId") == value:
                raise DuplicateExternalId(details={"externalId": [value]})
        holder = self.external_holders.get(value)
        if holder is not None and holder != lead_id and holder not in self.states:
            raise DuplicateExternalId(details={"externalId": [value]})

    async def _guard(self, emails: list[str]) -> None:
        """Write the upsert guard of each match (see _by_match), all in one round trip."""
        await self.stores.guards.bulk_write(
            [
                UpdateOne(
                    {"_id": upsert_guard_id(self.chatbot_id, email)},
                    {"$set": {"at": self.now}},
                    upsert=True,
                )
                for email in emails
            ],
            ordered=False,
            session=self.session,
        )
        self.guarded.update(emails)

    def _read(self, doc: dict[str, Any]) -> dict[str, Any]:
        self.states[doc["_id"]] = self.stored[doc["_id"]] = doc
        self.workspace_id = self.workspace_id or doc.get("workspaceId", "")
        return doc

    async def apply(self, unit: Unit) -> list[Outcome] | Exception:
        self.workspace_id = self.workspace_id or unit.workspace_id
        receipt = unit.receipt
        outcomes: list[Outcome] = []
        entries_before = self.entries
        for write in unit.writes:
            try:
                outcomes.append(await self._apply(unit.workspace_id, write))
            except AppError as exc:  # this write alone is refused
                outcomes.append(exc)
        entries = self.entries - entries_before
        if unit.max_entries is not None and entries > unit.max_entries:
            updates = any(isinstance(o, Written) and not o.created for o in outcomes)
            raise TooHeavy(unit, batch_too_heavy(entries, updates=updates))
        if receipt is not None:
            kept = receipt.answer.render(outcomes)
            # The leads the result holds: a deletion of one drops it (flush).
            held = [outcome.lead["id"] for outcome in outcomes if isinstance(outcome, Written)]
            if not await self.stores.idempotency.complete(
                receipt.lease, kept, session=self.session, lead_ids=held
            ):
                raise LeaseLost(unit)  # the transaction is dropped and runs without it
            receipt.kept = kept  # final once this transaction commits
        return outcomes

    async def _apply(self, workspace_id: str, write: LeadWrite) -> Outcome:
        # A new lead's email and phone, normalized again only if any is suppressed.
        if write.kind in (CREATE, UPSERT) and self.suppressed:
            if self.suppressed & new_addresses(write.fields, self.region):
                raise Suppressed()
        if write.kind == ERASE:
            return await self._erase(write)
        if write.kind == CREATE:
            self._check_external_id(None, write.fields)
            return self._create(workspace_id, write.fields)
        if write.kind == UPSERT:
            match = upsert_match(write.on, write.fields, self.region)
            if match is None:
                raise ValidationFailed(
                    details={"phone": [UPSERT_PHONE_MESSAGE]},
                )
            target = await self._by_match(*match)
            if target is None:
                self._check_external_id(None, write.fields)
                return self._create(workspace_id, write.fields)
            changes = write.merge if write.merge is not None else write.fields
            self._check_external_id(target["_id"], changes)
            return self._update(target, changes)
        current = await self._load(write.lead_id or "")
        if write.if_match is not None and not etag_matches(
            write.if_match, lead_etag(to_lead(current))
        ):
            raise PreconditionFailed()
        if write.kind == UPDATE:
            self._check_external_id(current["_id"], write.fields)
            return self._update(current, write.fields)
        if write.kind == MERGE:
            return await self._merge(current, write)
        return self._delete(current, write.audit or {}, write.reason)

    def _count(self, changes: dict[str, int], pair: str | None = None, by: int = 1) -> None:
        """Move the counters by ``changes``, and the (status, source) ``pair`` by ``by``."""
        if pair is not None:
            changes = {**changes, pair: by}
        for key, n in changes.items():
            self.counts[key] = self.counts.get(key, 0) + n

    def _create(self, workspace_id: str, fields: dict[str, Any]) -> Written:
        doc: dict[str, Any] = {"_id": ids.new_id(ids.LEAD)}
        doc.update(
            build_lead_document(self.chatbot_id, workspace_id, fields, self.now, self.region)
        )
        self.states[doc["_id"]] = doc
        self.stored[doc["_id"]] = None
        self._count({"total": 1, doc["status"]: 1}, pair_key(doc["status"], doc.get("source")))
        self.entries += index_entries(doc)
        self.bounds.include(doc["createdAt"], doc["nameSort"])
        lead = to_lead(doc)
        self.events.append((LEAD_CREATED, {"lead": lead}))
        return Written(lead, created=True)

    def _update(self, current: dict[str, Any], changes: dict[str, Any]) -> Written:
        return self._replace(current, apply_update(current, changes, self.now, self.region))

    async def _merge(self, target: dict[str, Any], write: LeadWrite) -> Written:
        """Merge the write's sources into ``target`` (documents.merged_document): each
        source deleted as a DELETE would (``"reason": "merged"``) and left a tombstone
        naming the target; the target changed, with a ``lead.merged`` event."""
        source_ids: list[str] = write.fields["source_ids"]
        sources = [await self._load(source_id) for source_id in source_ids]
        after = merged_document(target, sources, self.now, self.region)
        for source in sources:
            self._delete(source, write.audit or {}, "merged")
            self.tombstones.append(
                {
                    "_id": source["_id"],
                    "chatbotId": self.chatbot_id,
                    "mergedInto": target["_id"],
                    "at": self.now,
                }
            )
        self.bounds.include(after["createdAt"], None)
        return self._replace(target, after, LEAD_MERGED, {"mergedIds": source_ids})

    def _replace(
        self,
        current: dict[str, Any],
        after: dict[str, Any],
        kind: str = LEAD_UPDATED,
        extra: dict[str, Any] | None = None,
    ) -> Written:
        """The lead ``current`` is now ``after``: counted, and announced by ``kind``."""
        self.states[current["_id"]] = after
        self.entries += index_entries(current) + index_entries(after)
        if after["status"] != current["status"]:
            self._count({current["status"]: -1, after["status"]: 1})
        before_pair = pair_key(current["status"], current.get("source"))
        after_pair = pair_key(after["status"], after.get("source"))
        if before_pair != after_pair:
            self._count({}, before_pair, -1)
            self._count({}, after_pair)
        if after.get("nameSort") != current.get("nameSort"):
            self.bounds.include(None, after["nameSort"])
        lead = to_lead(after)
        changed = lead_changes(to_lead(current), lead)
        self.events.append((kind, {"lead": lead, "changes": changed, **(extra or {})}))
        return Written(lead, created=False)

    async def _erase(self, write: LeadWrite) -> Erased:
        """Delete up to ERASE_CHUNK of the chatbot's leads with the write's email or phone
        (as stored, and as this batch left them), each as a DELETE would."""
        ((field, value),) = write.fields.items()
        found = self.stores.leads.find(
            {"chatbotId": self.chatbot_id, field: value}, session=self.session
        ).limit(ERASE_CHUNK + 1)
        async for doc in found:
            if doc["_id"] not in self.states:
                self._read(doc)
        self.erasing = True
        matching = [
            lead for lead in self.states.values() if lead is not None and lead.get(field) == value
        ]
        erased = [
            self._delete(lead, write.audit or {}, write.reason).lead_id
            for lead in matching[:ERASE_CHUNK]
        ]
        return Erased(erased, more=len(matching) > ERASE_CHUNK)

    def _delete(
        self, current: dict[str, Any], audit: dict[str, Any], reason: str | None = None
    ) -> Deleted:
        lead_id = current["_id"]
        self.states[lead_id] = None
        self._count(
            {"total": -1, current["status"]: -1},
            pair_key(current["status"], current.get("source")),
            -1,
        )
        self.audits.append(
            {
                "_id": ids.new_id("aud_"),
                "action": "lead.delete",
                "leadId": lead_id,
                "chatbotId": self.chatbot_id,
                "at": self.now,
                "workspaceId": current.get("workspaceId"),
                **audit,
                **({"reason": reason} if reason else {}),
            }
        )
        self.deleted.append(lead_id)
        if current.get("emailFolded"):
            email = current["emailFolded"]
            self.deleted_guards.add(upsert_guard_id(self.chatbot_id, email))
            # As releases before the hashed ids named it (written no more; kept an hour).
            self.deleted_guards.add(f"{self.chatbot_id}:{email}")
        for field in ("phoneKey", "externalId"):  # the guards of upserts by them
            value = current.get(field)
            if value and not (field == "phoneKey" and value.startswith(DIGITS)):
                self.deleted_guards.add(upsert_guard_id(self.chatbot_id, guard_key(field, value)))
        # Its events of this batch hold it too (flush redacts those already stored).
        self.events = [
            (kind, redacted(lead_id) if data["lead"].get("id") == lead_id else data)
            for kind, data in self.events
        ]
        data: dict[str, Any] = {"lead": {"id": lead_id}}
        if reason:
            data["reason"] = reason
        self.events.append((LEAD_DELETED, data))
        return Deleted(lead_id, self.now)

    async def _load(self, lead_id: str) -> dict[str, Any]:
        """The chatbot's lead as it stands in this batch, or LeadNotFound."""
        if lead_id not in self.states:
            doc = None
            if ids.is_id(ids.LEAD, lead_id) and lead_id not in self.missing:
                doc = await self.stores.leads.find_one({"_id": lead_id}, session=self.session)
            if doc is None or doc.get("chatbotId") != self.chatbot_id:
                if ids.is_id(ids.LEAD, lead_id):  # merged into another lead of the chatbot?
                    tomb = await self.stores.tombstones.find_one(
                        {"_id": lead_id}, session=self.session
                    )
                    if tomb is not None and tomb["chatbotId"] == self.chatbot_id:
                        raise LeadMerged(details={"mergedInto": tomb["mergedInto"]})
                raise LeadNotFound()  # another chatbot's lead is never touched
            self._read(doc)
        state = self.states[lead_id]
        if state is None:
            raise LeadNotFound()
        return state

    async def _by_match(self, field: str, value: str) -> dict[str, Any] | None:
        """The chatbot's most recently created lead whose ``field`` (``emailFolded``,
        ``phoneKey``, ``externalId``) is ``value``, as this batch left it; from the leads
        ``prefetch`` read (after writing the match's guard: upserts of one email, phone
        or external id in other processes write that document too, so two of them
        cannot both miss each other's lead; one conflicts and runs again. Every write of
        the chatbot also moves its event sequence, which orders them as well; the guard
        keeps upserts right without relying on that)."""
        candidates = [
            state
            for state in self.states.values()
            if state is not None and state.get(field) == value
        ]
        candidates += [doc for doc in self.by_match[field, value] if doc["_id"] not in self.states]
        if not candidates:
            return None
        best = max(candidates, key=lambda doc: (to_ms(doc["createdAt"]), doc["_id"]))
        if best["_id"] not in self.states:
            self._read(best)
        return best

    async def flush(self, counts: Claim) -> None:
        """Write out the batch: leads, audit records, counters and events; and for the
        leads it deleted, no copy of their personal data left behind (the contract's
        "Deletion is permanent everywhere"): their earlier events redacted, and the
        kept Idempotency-Key results holding them dropped, the upsert guards of their
        emails removed."""
        leads, session = self.stores.leads, self.session
        new = [
            state
            for lead_id, state in self.states.items()
            if self.stored.get(lead_id) is None and state is not None
        ]
        if new:
            await leads.insert_many(new, session=session)
        # Deletions first: a merge's target may take the external id of a source it
        # deletes, which the unique index holds until the source is gone.
        writes: builtins.list[UpdateOne | DeleteOne] = [
            DeleteOne({"_id": lead_id})
            for lead_id, before in self.stored.items()
            if before is not None and self.states[lead_id] is None
        ]
        for lead_id, before in self.stored.items():
            after = self.states[lead_id]
            if before is None or after is before or after is None:
                continue
            sets = {k: v for k, v in after.items() if before.get(k, _ABSENT) != v}
            update: dict[str, Any] = {"$set": sets}
            gone = [k for k in before if k not in after]
            if gone:
                update["$unset"] = dict.fromkeys(gone, "")
            writes.append(UpdateOne({"_id": lead_id}, update))
        if writes:  # in one round trip
            await leads.bulk_write(writes, ordered=True, session=session)
        if self.audits:
            await self.stores.audit.insert_many(self.audits, session=session)
        if self.tombstones:
            await self.stores.tombstones.insert_many(self.tombstones, session=session)
        changes = {key: n for key, n in self.counts.items() if n}
        if changes or not self.bounds.empty:
            await counts.add(session, changes, self.bounds)
        if self.deleted:
            await self.stores.events.redact(session, self.chatbot_id, self.deleted)
            await self.stores.idempotency.forget_leads(self.deleted, session)
        if self.deleted_guards:  # the guard of its email: kept an hour past its last upsert
            await self.stores.guards.delete_many(
                {"_id": {"$in": sorted(self.deleted_guards)}}, session=session
            )
        await self.stores.events.append(
            session, self.chatbot_id, self.workspace_id, self.events, self.now
        )
        if self.erasing and not self.events:
            # Written all the same, so that a create in another process whose transaction
            # began before the erasure's suppression conflicts with this one (every write
            # of the chatbot moves its sequence) instead of committing unseen after it.
            await self.stores.events.touch(session, self.chatbot_id, self.now)


_ABSENT = object()
