"""The audit: admin actions and lead deletions, read oldest first.

Both kinds live in ``audit_log`` (a lead deletion's record is written in its
transaction, leads/transaction.py) and expire with it (retention.audit_days). An admin
action's record names its actor, action and target and never holds a secret or a lead's
personal data: ``details`` carries only names, ids, scopes, counts and times.
"""

from __future__ import annotations

from typing import Any

from .. import ids
from ..errors import AuditRecordNotFound
from ..store.client import Mongo, store_errors
from ..store.driver import ASCENDING, IndexModel
from ..timeutil import format_ts, utcnow

AUDIT_PREFIX = "aud_"
# Pages read in time order (the expiry index is on ``at`` alone).
AUDIT_INDEXES = {
    "audit_log": [IndexModel([("at", ASCENDING), ("_id", ASCENDING)], name="by_time")],
}
_ORDER = [("at", ASCENDING), ("_id", ASCENDING)]


def actor(*, admin_key_id: str | None) -> dict[str, Any]:
    """Who acted: an admin key, or the CLI on the server (``pollybot-leads admin``)."""
    if admin_key_id is None:
        return {"type": "cli", "id": None}
    return {"type": "adminKey", "id": admin_key_id}


def entry_json(doc: dict[str, Any]) -> dict[str, Any]:
    """An audit record as the API shows it, whichever kind it is."""
    if "leadId" in doc:  # a lead's deletion (DELETE, erasure)
        who = {"type": "apiKey", "id": doc.get("apiKeyId")}
        target = {
            "type": "lead",
            "id": doc["leadId"],
            "chatbotId": doc.get("chatbotId"),
            "workspaceId": doc.get("workspaceId"),
        }
        details = {"reason": doc["reason"]} if doc.get("reason") else None
    else:
        who, details = doc["actor"], doc.get("details")
        target = {"workspaceId": None, "chatbotId": None, **doc["target"]}
    return {
        "id": doc["_id"],
        "action": doc.get("action", "lead.delete"),
        "at": format_ts(doc["at"]),
        "actor": who,
        "target": target,
        "requestId": doc.get("requestId"),
        "details": details,
    }


class AuditTrail:
    def __init__(self, mongo: Mongo) -> None:
        self._log = mongo.db["audit_log"]

    @store_errors
    async def record(
        self,
        *,
        action: str,
        target: dict[str, Any],
        admin_key_id: str | None,
        request_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        doc: dict[str, Any] = {
            "_id": ids.new_id(AUDIT_PREFIX),
            "action": action,
            "at": utcnow(),
            "actor": actor(admin_key_id=admin_key_id),
            "target": target,
            "requestId": request_id,
        }
        if target.get("workspaceId") or target.get("type") == "workspace":
            doc["workspaceId"] = target.get("workspaceId") or target["id"]
        if details:
            doc["details"] = details
        await self._log.insert_one(doc)

    @store_errors
    async def page(self, *, after: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """Records after the one with id ``after`` (oldest first), and whether more
        follow. Two range reads on ``by_time``: the rest of ``after``'s instant, then
        what is later."""
        if after is None:
            found = await self._log.find({}).sort(_ORDER).limit(limit + 1).to_list(None)
            return [entry_json(d) for d in found[:limit]], len(found) > limit
        last = await self._log.find_one({"_id": after}, {"at": 1})
        if last is None:
            raise AuditRecordNotFound(f"No audit record {after} (it may have expired)")
        at = last["at"]
        same = self._log.find({"at": at, "_id": {"$gt": after}}).sort(_ORDER).limit(limit + 1)
        found = await same.to_list(None)
        if len(found) <= limit:
            later = self._log.find({"at": {"$gt": at}}).sort(_ORDER)
            found += await later.limit(limit + 1 - len(found)).to_list(None)
        return [entry_json(d) for d in found[:limit]], len(found) > limit
