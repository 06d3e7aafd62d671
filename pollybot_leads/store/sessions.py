"""Transactions a dead process left open, ended by the processes that live on.

A server or worker killed in the middle of a transaction leaves it open on the store,
holding its documents: every later write of the same documents conflicts until the
store expires it, 60 s later on mongod (``transactionLifetimeLimitSeconds``) and on the
embedded store (which has no such setting). Lead writes take the chatbot's event
sequence in their transaction, so one such transaction stopped all of a chatbot's
writes (503s) for up to a minute after a server was SIGKILLed (1 run in 4 of the fault
test).

So each serving process records the store sessions it runs transactions in (a session
id is new only while the driver's pool of sessions grows: a few writes per process
lifetime), and says it is alive every ``HEARTBEAT_SECONDS``. Any process that finds
another's record silent for ``STALE_SECONDS``, or made by a process of this host that
no longer runs, ends that process's sessions with ``killSessions`` (which aborts their
transactions) and deletes the record. A restarted server thus clears its predecessor's
transactions as it starts, on the same host, and within ``STALE_SECONDS`` elsewhere.
Ending the sessions of a process that is alive after all (stopped for longer than
that) only aborts its open transactions: their commits fail, and nothing they wrote
was acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pymongo
from pymongo import ReturnDocument
from pymongo.errors import OperationFailure, PyMongoError

from ..cancellation import cancel_and_wait, cancelling

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
STALE_SECONDS = 30.0
CALL_BUDGET_SECONDS = 5.0
# The registries kept in this process (several apps can run in one, as in the tests): a
# record of this host and pid that is not among them is a previous process's.
_KEPT_HERE: set[str] = set()


def process_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it runs
        return True
    return True


class SessionRegistry:
    """This process's transaction sessions, kept in ``server_sessions`` while it runs."""

    def __init__(self, db: Any) -> None:
        self._records = db["server_sessions"]
        self._admin = db.client.admin
        self.instance = secrets.token_hex(8)
        self._host = socket.gethostname()
        self._pid = os.getpid()
        self._known: set[bytes] = set()
        self._kept = False

    async def register(self, session_id: dict[str, Any]) -> None:
        """Record ``session_id`` (the driver's ``session.session_id``) before the first
        transaction in it: a no-op for one already recorded, and while not kept."""
        key = bytes(session_id["id"])
        if not self._kept or key in self._known:
            return
        await self._records.update_one(
            {"_id": self.instance},
            {"$addToSet": {"lsids": session_id["id"]}, **self._alive()},
            upsert=True,
        )
        self._known.add(key)

    def _alive(self) -> dict[str, Any]:
        # aliveAt by the store's clock: processes on hosts whose clocks differ never take
        # each other for silent.
        return {"$set": {"host": self._host, "pid": self._pid}, "$currentDate": {"aliveAt": True}}

    async def reap(self, now: datetime | None = None) -> int:
        """End the sessions of every process that is gone; how many processes that was.
        Without ``now`` (the store's time, as this process's own beat read it) only
        processes of this host are judged, by whether they run."""
        stale_before = now - timedelta(seconds=STALE_SECONDS) if now is not None else None
        ended = 0
        async for record in self._records.find({"_id": {"$nin": list(_KEPT_HERE)}}):
            silent = stale_before is not None and record["aliveAt"] < stale_before
            gone = silent or (
                record.get("host") == self._host
                and (record.get("pid") == self._pid or not process_running(record["pid"]))
            )
            if not gone:
                continue
            lsids = [{"id": lsid} for lsid in record.get("lsids", [])]
            if lsids:
                try:
                    await self._admin.command({"killSessions": lsids})
                except OperationFailure as exc:  # refused (Atlas' shared tiers): the
                    log.warning("store refused killSessions: %s", exc)  # store expires
                    # the transactions itself (60 s); the record goes all the same
            # Only if it did not come back meanwhile (a process stopped, then continued).
            await self._records.delete_one({"_id": record["_id"], "aliveAt": record["aliveAt"]})
            log.warning(
                "ended %d store sessions of a process that is gone (%s, pid %s)",
                len(lsids),
                record.get("host"),
                record.get("pid"),
            )
            ended += 1
        return ended

    async def _beat(self) -> datetime | None:
        """Say this process is alive; the store's time, when it has a record."""
        if not self._known:
            return None
        mine = await self._records.find_one_and_update(
            {"_id": self.instance}, self._alive(), return_document=ReturnDocument.AFTER
        )
        if mine is None:  # another process took this one for gone (it was stopped that
            self._known.clear()  # long) and ended its sessions: record them anew
            return None
        now: datetime = mine["aliveAt"]
        return now

    async def _tend(self) -> None:
        # Ends when kept() does: by its cancellation, or, where the driver took that
        # cancellation for a failed round trip or let it pass unseen (seen in the suite:
        # the task "cancelling", asleep for the next beat, for ever), right after.
        while self._kept:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                with pymongo.timeout(CALL_BUDGET_SECONDS):
                    await self.reap(await self._beat())
            except PyMongoError as exc:  # the store is away: the next beat tries again
                if not cancelling():
                    log.debug("session registry: %s", exc)
            if cancelling():
                raise asyncio.CancelledError

    @contextlib.asynccontextmanager
    async def kept(self) -> AsyncIterator[None]:
        """Record sessions while inside: reap the processes gone before starting, then
        beat and reap in the background; delete this process's record at the end."""
        try:
            with pymongo.timeout(CALL_BUDGET_SECONDS):
                await self.reap()
        except PyMongoError as exc:
            log.warning("could not end the sessions of processes that are gone: %s", exc)
        self._kept = True
        _KEPT_HERE.add(self.instance)
        task = asyncio.get_running_loop().create_task(self._tend())
        try:
            yield
        finally:
            self._kept = False
            _KEPT_HERE.discard(self.instance)
            failure = await cancel_and_wait(task)
            if failure is not None:
                log.warning("session registry: %r", failure)
            with contextlib.suppress(PyMongoError), pymongo.timeout(CALL_BUDGET_SECONDS):
                await self._records.delete_one({"_id": self.instance})
