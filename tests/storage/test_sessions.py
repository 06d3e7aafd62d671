"""A transaction left open by a process that was SIGKILLed: ended by the processes that
live on (store/sessions.py), instead of blocking its documents until the store
expires it (60 s)."""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import random
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from pollybot_leads.errors import ServiceUnavailable
from pollybot_leads.settings import Settings
from pollybot_leads.store import sessions
from pollybot_leads.store.client import Mongo, store_deadline
from pollybot_leads.store.sessions import STALE_SECONDS, SessionRegistry

# A process that records its sessions as a server does, opens a transaction on the
# document and holds it open: the state a server killed mid-write leaves.
HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from pollybot_leads.store.client import Mongo

    async def main(uri, database, driver):
        mongo = Mongo(uri, database, driver)
        await mongo.connect()
        async with mongo.sessions.kept():
            async def hold(session):
                held = mongo.db["held"]
                await held.update_one({"_id": "doc"}, {"$inc": {"n": 1}}, session=session)
                print("holding", flush=True)
                await asyncio.sleep(3600)
            await mongo.transaction(hold)

    asyncio.run(main(*sys.argv[1:]))
    """
)


@pytest.fixture
async def holder(settings: Settings, mongo: Mongo) -> AsyncIterator[subprocess.Popen[str]]:
    await mongo.db["held"].replace_one({"_id": "doc"}, {"_id": "doc", "n": 0}, upsert=True)
    argv = [sys.executable, "-c", HOLDER, settings.mongodb_uri, settings.mongodb_database]
    process = subprocess.Popen([*argv, settings.mongodb_driver], stdout=subprocess.PIPE, text=True)
    try:
        line = await asyncio.to_thread(process.stdout.readline)  # type: ignore[union-attr]
        assert line.strip() == "holding"
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stdout.close()  # type: ignore[union-attr]
        await SessionRegistry(mongo.db).reap()  # nothing left holding the document


async def write(mongo: Mongo, budget: float) -> None:
    async def bump(session: object) -> None:
        await mongo.db["held"].update_one({"_id": "doc"}, {"$inc": {"n": 10}}, session=session)

    with store_deadline(budget):
        await mongo.transaction(bump)


async def test_a_killed_process_transaction_is_ended_by_the_next_reap(holder, mongo) -> None:
    registry = SessionRegistry(mongo.db)
    await registry.reap()  # the holder runs: its sessions are left alone
    with pytest.raises(ServiceUnavailable):  # its transaction holds the document
        await write(mongo, 1.0)

    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert await registry.reap() >= 1  # gone from this host: no need to wait for silence
    await write(mongo, 2.0)
    doc = await mongo.db["held"].find_one({"_id": "doc"})
    assert doc["n"] == 10  # the killed process's change was never committed; ours was
    assert await mongo.db["server_sessions"].count_documents({"pid": holder.pid}) == 0


async def test_a_process_of_another_host_is_ended_once_silent(holder, mongo) -> None:
    """A record from another host is judged by its silence alone, on the store's clock:
    left while it beats, ended once it has been silent for STALE_SECONDS."""
    os.kill(holder.pid, signal.SIGSTOP)  # it can beat no more
    records = mongo.db["server_sessions"]
    await records.update_one({"pid": holder.pid}, {"$set": {"host": "elsewhere"}})
    registry = SessionRegistry(mongo.db)
    assert await registry.reap() == 0  # no clock to judge silence by: left alone
    record = await records.find_one({"pid": holder.pid})
    assert await registry.reap(record["aliveAt"]) == 0  # it beat just now
    silent_since = record["aliveAt"] + timedelta(seconds=STALE_SECONDS + 1)
    assert await registry.reap(silent_since) == 1
    await write(mongo, 2.0)


# A beat cancelled inside a round trip leaves its connection to the garbage collector:
# the driver drops it without closing its socket (1 run in 5 or so). That is the
# driver's, once per cancelled round trip, and what this test does 150 times on purpose;
# it is collected here (below), so that a later test is not blamed for it.
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning",
    "ignore:unclosed <socket.socket:ResourceWarning",
)
async def test_leaving_kept_always_ends_the_beats(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entered and left 150 times with a beat every half millisecond, so that the
    cancellation lands anywhere in a beat: each exit ends at once. (The driver can let a
    cancellation inside a round trip pass unseen: the beats then went on for ever, and
    the suite's teardown waited for them, in one CI run and within 40 turns here.)"""
    monkeypatch.setattr(sessions, "HEARTBEAT_SECONDS", 0.0005)
    mongo = Mongo(settings.mongodb_uri, settings.mongodb_database, settings.mongodb_driver)
    await mongo.connect()
    session = mongo.client.start_session()
    if inspect.isawaitable(session):  # motor: a coroutine; PyMongo: the session
        session = await session
    try:
        for turn in range(150):
            kept = mongo.sessions.kept()
            await kept.__aenter__()
            await mongo.sessions.register(session.session_id)
            await asyncio.sleep(random.uniform(0, 0.03))
            leaving = asyncio.ensure_future(kept.__aexit__(None, None, None))
            # Not a timeout around it: the exit used to swallow that cancellation too.
            done, _ = await asyncio.wait([leaving], timeout=5)
            assert done, f"turn {turn}: the registry's beats did not stop"
    finally:
        await mongo.close()
        gc.collect()  # the sockets of cancelled round trips, while the filters apply
