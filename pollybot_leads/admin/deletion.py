"""Deleting a workspace or a chatbot: a durable background job.

The admin API marks the target at once (a workspace's keys revoked, a chatbot answering
404) and stores a job in ``deletion_jobs``; any process serving the API runs jobs, one
at a time each, under a lease it renews as it goes, so a job whose process died is taken
up by another (or the same, restarted) once its lease lapses. Every step removes what
is left, so a step done twice does nothing wrong.

A job removes, chatbot by chatbot, its leads (and the Idempotency-Key results holding
them), events, event sequence, counters, lead-deletion audit records and queued webhook
deliveries and replays; for a workspace also its webhook endpoints (with their logs),
suppressions, the results kept for its keys, its keys and chatbots. Then it waits until
every process has dropped the target from its caches (``grace``: the key cache time),
sweeps once more for anything a request admitted just before the marking wrote, and
removes the workspace or chatbot itself. What stays is the admin audit: who asked for
the deletion and, once done, how much it removed (ids and counts, nothing else).

It gives way to the API's requests (webhooks/pacing.py's Pacer): while requests are in
flight its store steps take at most ``share`` of the time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from ..cancellation import cancel_and_wait
from ..leads.counters import shard_filter
from ..settings import Settings
from ..store.client import Mongo, store_errors
from ..store.driver import ASCENDING, IndexModel, ReturnDocument
from ..timeutil import format_ts, utcnow
from ..webhooks.pacing import Pacer
from .audit import AuditTrail

log = logging.getLogger(__name__)

# Documents removed per step: a step of 200 leads kept the embedded store busy for
# most of a second, which every request waited out (bench-deletion: single seconds of
# creates at a quarter of their rate); the pacing bounds the share, the chunk the stall.
CHUNK = 100
LEASE = timedelta(seconds=10)  # renewed every step (and thrice a lease while it waits)
POLL_SECONDS = 1.0
SHARE = 0.03  # of the store's time while the API is busy (bench-deletion)
WORKSPACE, CHATBOT = "workspace", "chatbot"
DELETION_INDEXES = {
    "deletion_jobs": [IndexModel([("state", ASCENDING), ("leaseUntil", ASCENDING)], name="due")]
}


def grace_seconds(settings: Settings) -> float:
    """How long a job waits before its last sweep: every process's caches have dropped
    the target (the key cache time), and a request admitted just before the marking has
    committed or failed (its store budget, with a second to spare)."""
    return max(settings.key_cache_seconds, settings.mongodb_timeout_ms / 1000 + 1.0)


def job_json(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "state": doc["state"],
        "requestedAt": format_ts(doc["requestedAt"]),
        "removed": dict(doc.get("removed") or {}),
        "finishedAt": format_ts(doc["finishedAt"]) if doc.get("finishedAt") else None,
    }


class DeletionJobs:
    def __init__(
        self,
        mongo: Mongo,
        *,
        grace_seconds: float,
        busy: Callable[[], bool] | None = None,
    ) -> None:
        self._db = mongo.db
        self._mongo = mongo
        self._jobs = mongo.db["deletion_jobs"]
        self._grace = timedelta(seconds=max(grace_seconds, 1.0))
        self._pacer = Pacer(busy, SHARE)
        self._audit = AuditTrail(mongo)

    @store_errors
    async def schedule(self, *, kind: str, target_id: str, workspace_id: str) -> dict[str, Any]:
        """The job deleting the target (the one already scheduled, if any)."""
        now = utcnow()
        doc = await self._jobs.find_one_and_update(
            {"_id": target_id},
            {
                "$setOnInsert": {
                    "kind": kind,
                    "workspaceId": workspace_id,
                    "state": "running",
                    "requestedAt": now,
                    "graceUntil": now + self._grace,
                    "leaseUntil": now,
                    "removed": {},
                }
            },
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        return dict(doc)

    @store_errors
    async def job(self, target_id: str) -> dict[str, Any] | None:
        doc = await self._jobs.find_one({"_id": target_id})
        return None if doc is None else dict(doc)

    async def run(self) -> None:
        """Run jobs until cancelled."""
        while True:
            try:
                ran = await self.run_one()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store's trouble: the lease lapses, it resumes
                log.warning("deletion job interrupted: %s", exc)
                ran = False
            if not ran:
                await asyncio.sleep(POLL_SECONDS)

    async def run_one(self) -> bool:
        """Take a job whose lease has lapsed and run it to its end; False when none."""
        now = utcnow()
        job = await self._jobs.find_one_and_update(
            {"state": "running", "leaseUntil": {"$lte": now}},
            {"$set": {"leaseUntil": now + LEASE}},
            return_document=ReturnDocument.AFTER,
        )
        if job is None:
            return False
        await self._run(job)
        return True

    async def _run(self, job: dict[str, Any]) -> None:
        target, workspace_id = job["_id"], job["workspaceId"]
        if job["kind"] == WORKSPACE:
            chatbots = [d["_id"] async for d in self._db["chatbots"].find({"workspaceId": target})]
        else:
            chatbots = [target]
        for final in (False, True):
            if final:  # after the grace, nothing a cached key or chatbot let in is left
                await self._sleep_until(job["graceUntil"], target)
            for chatbot_id in chatbots:
                await self._remove_chatbot_data(target, chatbot_id, workspace_id)
            if job["kind"] == WORKSPACE:
                await self._remove_workspace_data(target)
        if job["kind"] == WORKSPACE:
            await self._drain(target, "chatbots", {"workspaceId": target})
            await self._db["workspaces"].delete_one({"_id": target})
        else:
            await self._db["chatbots"].delete_one({"_id": target})
        done = await self._jobs.find_one_and_update(
            {"_id": target},
            {"$set": {"state": "done", "finishedAt": utcnow()}, "$unset": {"leaseUntil": ""}},
            return_document=ReturnDocument.AFTER,
        )
        await self._audit.record(
            action=f"{job['kind']}.deleted",
            target={"type": job["kind"], "id": target, "workspaceId": workspace_id},
            admin_key_id=None,
            details={"removed": dict(done.get("removed") or {})} if done else None,
        )
        log.info("%s %s deleted", job["kind"], target)

    async def _remove_chatbot_data(self, job_id: str, chatbot_id: str, workspace_id: str) -> None:
        async def forget_results(lead_ids: list[Any]) -> None:
            await self._db["idempotency_keys"].delete_many({"leadIds": {"$in": lead_ids}})

        await self._drain(job_id, "leads", {"chatbotId": chatbot_id}, also=forget_results)
        await self._drain(job_id, "events", {"chatbotId": chatbot_id})
        await self._drain(job_id, "event_sequences", {"_id": chatbot_id})
        await self._drain(job_id, "lead_counts", shard_filter(chatbot_id))
        await self._drain(job_id, "audit_log", {"chatbotId": chatbot_id})
        await self._drain(job_id, "merge_tombstones", {"chatbotId": chatbot_id})
        async for endpoint in self._db["webhooks"].find({"workspaceId": workspace_id}, {"_id": 1}):
            mine = {"webhookId": endpoint["_id"], "chatbotId": chatbot_id}
            await self._drain(job_id, "webhook_deliveries", mine)
            await self._drain(job_id, "webhook_replays", mine)

    async def _remove_workspace_data(self, workspace_id: str) -> None:
        async for endpoint in self._db["webhooks"].find({"workspaceId": workspace_id}, {"_id": 1}):
            of_endpoint = {"webhookId": endpoint["_id"]}
            for name in ("webhook_deliveries", "webhook_replays", "webhook_attempts"):
                await self._drain(workspace_id, name, of_endpoint)
        await self._drain(workspace_id, "webhooks", {"workspaceId": workspace_id})
        await self._drain(workspace_id, "suppressions", {"workspaceId": workspace_id})
        keys = [d["_id"] async for d in self._db["api_keys"].find({"workspaceId": workspace_id})]
        if keys:
            await self._drain(workspace_id, "idempotency_keys", {"scope": {"$in": keys}})
        await self._drain(workspace_id, "api_keys", {"workspaceId": workspace_id})
        await self._drain(workspace_id, "api_keys", {"aliasWorkspaceId": workspace_id})

    async def _drain(
        self,
        job_id: str,
        collection: str,
        query: dict[str, Any],
        also: Callable[[list[Any]], Awaitable[Any]] | None = None,
    ) -> None:
        """Remove what ``query`` matches, CHUNK documents per paced step, counting them
        on the job and renewing its lease. Not in a transaction: in one, a step cost the
        embedded store three times the CPU (bench-deletion: 290 s against 99 s for
        20,000 leads); a step cut by a crash is done again, and only its count may be
        lost."""
        store = self._db[collection]
        while True:
            async with self._step():
                chosen = [d["_id"] async for d in store.find(query, {"_id": 1}).limit(CHUNK)]
                if not chosen:
                    return
                if also is not None:  # first: what refers to the documents goes before them
                    await also(chosen)
                result = await store.delete_many({"_id": {"$in": chosen}})
                await self._jobs.update_one(
                    {"_id": job_id},
                    {
                        "$inc": {f"removed.{collection}": result.deleted_count},
                        "$set": {"leaseUntil": utcnow() + LEASE},
                    },
                )
            if len(chosen) < CHUNK:
                return

    @contextlib.asynccontextmanager
    async def _step(self) -> AsyncIterator[None]:
        async with self._pacer.step():
            yield

    async def _sleep_until(self, when: datetime, job_id: str) -> None:
        while (left := (when - utcnow()).total_seconds()) > 0:
            await asyncio.sleep(min(left, LEASE.total_seconds() / 3))
            await self._jobs.update_one({"_id": job_id}, {"$set": {"leaseUntil": utcnow() + LEASE}})


@contextlib.asynccontextmanager
async def running_deletions(jobs: DeletionJobs) -> AsyncIterator[None]:
    """Deletion jobs run in the background while the block runs."""
    task = asyncio.create_task(jobs.run(), name="deletions")
    try:
        yield
    finally:
        failure = await cancel_and_wait(task)
        if failure is not None:
            log.error("deletion jobs failed", exc_info=failure)
