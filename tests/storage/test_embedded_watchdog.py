"""The embedded store's watchdog, on a real SecantusDB child process: a store that answers
nothing at no CPU is restarted on its data; one that somebody stopped is left alone."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymongo import MongoClient, WriteConcern

from pollybot_leads.store.embedded import EmbeddedStore, free_port

STALL = 2.0  # seconds of silence the tests' watchdog waits for (the service's: 10)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EmbeddedStore]:
    embedded = EmbeddedStore(tmp_path / "store", free_port(), test_commands=True)
    embedded.start()
    try:
        yield embedded
    finally:
        embedded.stop()


def client(store: EmbeddedStore, timeout_ms: int = 1000) -> MongoClient[dict]:
    return MongoClient(store.uri, serverSelectionTimeoutMS=timeout_ms, socketTimeoutMS=timeout_ms)


def answers(store: EmbeddedStore) -> bool:
    with client(store) as probe:
        try:
            probe["t"].command("find", "leads", limit=1)
            return True
        except Exception:
            return False


def wait_until(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_a_store_that_answers_nothing_at_no_cpu_is_restarted_with_its_data(
    store: EmbeddedStore,
) -> None:
    with client(store) as mongo:
        leads = mongo["t"].get_collection("leads", write_concern=WriteConcern(w=1, j=True))
        leads.insert_many([{"_id": n, "name": f"lead {n}"} for n in range(20)])
        # Every find now waits a minute without using the CPU: what the deadlock looks like
        # from outside (docs/load.md).
        mongo.admin.command(
            "configureFailPoint",
            "failCommand",
            mode="alwaysOn",
            data={"failCommands": ["find"], "blockConnection": True, "blockTimeMS": 60_000},
        )
    before = store.process.pid if store.process else None
    assert not answers(store)
    store.watch(stall_seconds=STALL)
    assert wait_until(lambda: store.restarts == 1 and answers(store), STALL + 15)
    assert store.process is not None and store.process.pid != before
    with client(store) as mongo:  # the failpoint went with the old process; the data did not
        names = sorted(doc["name"] for doc in mongo["t"]["leads"].find())
    assert names == sorted(f"lead {n}" for n in range(20))


def test_a_stopped_store_is_left_alone(store: EmbeddedStore) -> None:
    assert store.process is not None
    pid = store.process.pid
    store.watch(stall_seconds=STALL)
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(STALL + 3)
        assert store.restarts == 0 and store.process.pid == pid
    finally:
        os.kill(pid, signal.SIGCONT)
    assert wait_until(lambda: answers(store), 10)
    assert store.restarts == 0 and store.process.pid == pid


def test_a_store_that_answers_is_left_alone(store: EmbeddedStore) -> None:
    assert store.process is not None
    pid = store.process.pid
    store.watch(stall_seconds=STALL)
    deadline = time.monotonic() + STALL + 3
    while time.monotonic() < deadline:
        assert answers(store)
        time.sleep(0.2)
    assert store.restarts == 0 and store.process.pid == pid
