"""`pollybot-leads admin dump` and `admin restore`, run as a user runs them, against a
database of this module's own on the session's store (and a fresh store to restore
into), while an in-process API writes to it."""

from __future__ import annotations

import asyncio
import io
import json
import os
import secrets
import shutil
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import bson
import pytest
from pymongo.errors import OperationFailure

from pollybot_leads.accounts.repository import AccountRepository
from pollybot_leads.leads import dump_reads
from pollybot_leads.leads.rules import STATUSES
from pollybot_leads.ops import dump as dump_module
from pollybot_leads.ops.dumpfiles import MANIFEST, Progress
from pollybot_leads.store.client import Mongo
from pollybot_leads.store.embedded import EmbeddedStore, free_port
from tests.conftest import Tenant, database_of, make_tenant, serving

from .backup_checks import (
    Writer,
    assert_consistent,
    assert_feed_prefix,
    dump_under_writes,
    new_event_continues,
    run_cli,
    view,
)

# The session's own SecantusDB goes with its directory; a MONGODB_URI server keeps them.
DROP = bool(os.environ.get("MONGODB_URI"))


def cli_env(uri: str, database: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PB_DATA_DIR")}
    env.update(MONGODB_URI=uri, MONGODB_DATABASE=database, LOG_LEVEL="WARNING")
    return env


@pytest.fixture(scope="module")
def src_settings(settings):
    return settings.replace(mongodb_database=f"backup_src_{secrets.token_hex(4)}")


@pytest.fixture(scope="module")
async def src(src_settings) -> AsyncIterator[Mongo]:
    async with database_of(src_settings, drop=DROP) as mongo:
        yield mongo


@pytest.fixture(scope="module")
async def src_api(src_settings, src):
    async with serving(src_settings) as client:
        yield client


@pytest.fixture(scope="module")
def src_env(src_settings) -> dict[str, str]:
    return cli_env(src_settings.mongodb_uri, src_settings.mongodb_database)


@pytest.fixture
def fresh_store(tmp_path: Path) -> Iterator[EmbeddedStore]:
    """A store of the test's own: nothing in it."""
    store = EmbeddedStore(tmp_path / "fresh", free_port())
    store.start()
    try:
        yield store
    finally:
        store.discard()


def target(settings) -> tuple[str, dict[str, str]]:
    """A new, empty database on the session's store, and the CLI's environment for it."""
    name = f"backup_dst_{secrets.token_hex(4)}"
    return name, cli_env(settings.mongodb_uri, name)


async def seed(http: Any, tenant: Tenant, n: int) -> None:
    """``n`` leads in batches, as an integration imports them (with their events)."""
    for start in range(0, n, 100):
        items = [
            {
                "name": f"Seeded {tenant.chatbot_id[-4:]} {i}",
                "email": f"seed{i}.{tenant.chatbot_id}@example.com",
                "status": STATUSES[i % len(STATUSES)],
                "metadata": {"i": i, "big": 2**40 + i, "ratio": i / 7, "tags": ["a", "b"]},
            }
            for i in range(start, min(n, start + 100))
        ]
        resp = await http.post(
            tenant.leads_url + "/batch", json={"leads": items}, headers=tenant.headers
        )
        assert resp.status in (200, 201, 207), await resp.text()


async def all_documents(db: Any) -> dict[str, list[bytes]]:
    """Every collection's documents as BSON, in _id order (types and all)."""
    out = {}
    for name in sorted(await db.list_collection_names()):
        if name != "server_sessions":
            docs = await db[name].find({}, sort=[("_id", 1)]).to_list(None)
            out[name] = [bson.encode(doc) for doc in docs]
    return out


# --- a dump while writes go on, restored into a fresh store ----------------------------


async def test_a_dump_taken_while_leads_are_written_restores_consistent_chatbots(
    src, src_api, src_env, settings, fresh_store, tmp_path
):
    accounts = AccountRepository(src)
    tenants = [await make_tenant(accounts) for _ in range(3)]
    for tenant in tenants:
        await seed(src_api, tenant, 300)
    resp = await src_api.post(
        "/api/v1/webhooks",
        json={"url": "https://example.com/hooks/pollybot"},
        headers=tenants[0].headers,
    )
    assert resp.status == 201
    webhook = (await resp.json())["data"]

    writer = Writer(src_api, [(t.chatbot_id, t.headers) for t in tenants]).start()
    dump = await dump_under_writes(
        writer, acked_first=30, out=str(tmp_path / "dump"), env=src_env, then=0.5
    )
    code, dumped, err = dump.code, dump.summary, dump.err
    assert code == 0, (dumped, err)
    assert err == ""  # no progress when stderr is not a terminal
    during = dump.acked_during
    assert during >= 20, f"only {during} writes were acknowledged while the dump ran"
    assert not writer.failed, writer.failed[:5]

    restored_db = "restored"
    code, restored, err = await run_cli(
        "admin",
        "restore",
        "--from",
        str(tmp_path / "dump"),
        env=cli_env(fresh_store.uri, restored_db),
    )
    assert code == 0, (restored, err)
    assert restored["collections"] == dumped["collections"]
    assert restored["documents"] == dumped["documents"] and restored["replaced"] == []

    moved_on = restored_leads = 0
    async with serving(
        settings.replace(mongodb_uri=fresh_store.uri, mongodb_database=restored_db)
    ) as copy:
        for tenant in tenants:
            chatbot = await view(copy, tenant.chatbot_id, tenant.headers)  # the same key works
            assert_consistent(chatbot)
            restored_leads += len(chatbot.leads)
            source = await view(src_api, tenant.chatbot_id, tenant.headers)
            assert set(chatbot.leads) <= set(source.leads) | {
                e["data"]["lead"]["id"] for e in source.events if e["type"] == "lead.deleted"
            }
            assert_feed_prefix(source, chatbot)
            moved_on += source.last_sequence - chatbot.last_sequence
            await new_event_continues(copy, tenant.chatbot_id, tenant.headers)
        assert restored_leads == dumped["collections"]["leads"]
        resp = await copy.get(f"/api/v1/webhooks/{webhook['id']}", headers=tenants[0].headers)
        assert resp.status == 200
        shown = (await resp.json())["data"]
        assert {k: v for k, v in shown.items() if k != "updatedAt"} == {
            k: v for k, v in webhook.items() if k not in ("secret", "updatedAt")
        }
    assert moved_on > 0  # the source went on writing after the dump read each chatbot

    async with database_of(
        settings.replace(mongodb_uri=fresh_store.uri, mongodb_database=restored_db), drop=False
    ) as copy_mongo:
        stored = await copy_mongo.db["webhooks"].find_one({"_id": webhook["id"]})
        assert stored["secrets"][0]["value"] == webhook["secret"]


# --- a small dump, and what a restore refuses -------------------------------------------


@pytest.fixture(scope="module")
async def small(settings) -> AsyncIterator[tuple[Mongo, dict[str, str]]]:
    """A quiet database of its own (nothing writes to it once seeded): one tenant with
    150 leads of every kind of value, some changed and deleted, and a webhook endpoint."""
    small_settings = settings.replace(mongodb_database=f"backup_small_{secrets.token_hex(4)}")
    async with database_of(small_settings, drop=DROP) as mongo, serving(small_settings) as api:
        tenant = await make_tenant(AccountRepository(mongo))
        await seed(api, tenant, 150)
        page = (await (await api.get(tenant.leads_url, headers=tenant.headers)).json())["data"]
        for lead in page["leads"][:5]:
            resp = await api.put(
                tenant.lead_url(lead["id"]), json={"status": "converted"}, headers=tenant.headers
            )
            await resp.read()
        for lead in page["leads"][5:8]:
            resp = await api.delete(
                tenant.lead_url(lead["id"]), params={"confirm": "true"}, headers=tenant.headers
            )
            await resp.read()
        resp = await api.post(
            "/api/v1/webhooks", json={"url": "https://example.com/hooks"}, headers=tenant.headers
        )
        assert resp.status == 201
        yield mongo, cli_env(small_settings.mongodb_uri, small_settings.mongodb_database)


@pytest.fixture(scope="module")
async def small_dump(small, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("small") / "dump"
    code, summary, err = await run_cli("admin", "dump", "--out", str(out), env=small[1])
    assert code == 0, (summary, err)
    return out


async def test_a_restore_gives_back_every_document_as_it_was(small_dump, small, mongo, settings):
    assert (small_dump.stat().st_mode & 0o077) == 0  # keys' digests and webhook secrets
    assert all((f.stat().st_mode & 0o077) == 0 for f in small_dump.iterdir())
    manifest = json.loads((small_dump / MANIFEST).read_text())
    name, env = target(settings)
    code, restored, err = await run_cli("admin", "restore", "--from", str(small_dump), env=env)
    assert code == 0, (restored, err)
    copy = mongo.client[name]
    try:
        before, after = await all_documents(small[0].db), await all_documents(copy)
        assert {k: len(v) for k, v in after.items() if v} == {
            k: e["count"] for k, e in manifest["collections"].items() if e["count"]
        }
        assert {k: v for k, v in after.items() if v} == {k: v for k, v in before.items() if v}
        indexes = await copy["leads"].index_information()
        assert {"by_created", "by_search", "by_metadata"} <= set(indexes)
        assert "expiry" in await copy["events"].index_information()
    finally:
        await mongo.client.drop_database(name)


def damaged(small_dump: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "damaged"
    shutil.copytree(small_dump, copy)
    return copy


async def refused(dump: Path, settings, mongo, code_wanted: str, *flags: str) -> str:
    name, env = target(settings)
    code, out, err = await run_cli("admin", "restore", "--from", str(dump), *flags, env=env)
    assert code == 1, (out, err)
    assert out["error"]["code"] == code_wanted, out
    assert await mongo.client[name].list_collection_names() == []  # nothing written
    return str(out["error"]["message"])


async def test_a_changed_byte_is_refused_before_anything_is_written(
    small_dump, settings, mongo, tmp_path
):
    dump = damaged(small_dump, tmp_path)
    leads = dump / "leads.jsonl"
    data = bytearray(leads.read_bytes())
    at = data.index(b"Seeded") + 1
    data[at] = ord("E") if data[at] != ord("E") else ord("F")  # "Seeded" -> "SEeded"
    leads.write_bytes(bytes(data))
    message = await refused(dump, settings, mongo, "DUMP_DAMAGED")
    assert "leads.jsonl" in message and "checksum" in message


async def test_a_missing_file_is_refused_before_anything_is_written(
    small_dump, settings, mongo, tmp_path
):
    dump = damaged(small_dump, tmp_path)
    (dump / "events.jsonl").unlink()
    message = await refused(dump, settings, mongo, "DUMP_DAMAGED")
    assert "events.jsonl is missing" in message


async def test_a_dump_without_its_manifest_or_with_a_wrong_count_is_refused(
    small_dump, settings, mongo, tmp_path
):
    dump = damaged(small_dump, tmp_path)
    manifest = json.loads((dump / MANIFEST).read_text())
    manifest["collections"]["leads"]["count"] += 1
    (dump / MANIFEST).write_text(json.dumps(manifest))
    message = await refused(dump, settings, mongo, "DUMP_DAMAGED")
    assert "leads.jsonl holds" in message
    (dump / MANIFEST).unlink()
    message = await refused(dump, settings, mongo, "DUMP_DAMAGED")
    assert "no manifest.json" in message


async def test_a_database_holding_documents_is_refused_without_force(small_dump, settings, mongo):
    name, env = target(settings)
    db = mongo.client[name]
    await db["notes"].insert_one({"_id": "keep", "text": "mine"})
    try:
        code, out, err = await run_cli("admin", "restore", "--from", str(small_dump), env=env)
        assert code == 1 and out["error"]["code"] == "TARGET_NOT_EMPTY", (out, err)
        assert "notes" in out["error"]["message"] and "--force" in out["error"]["message"]
        assert await db.list_collection_names() == ["notes"]  # nothing changed
        assert await db["notes"].find_one({}) == {"_id": "keep", "text": "mine"}

        code, out, err = await run_cli(
            "admin", "restore", "--from", str(small_dump), "--force", env=env
        )
        assert code == 0, (out, err)
        assert out["replaced"] == ["notes"]
        assert "notes" not in await db.list_collection_names()  # it was replaced whole
        manifest = json.loads((small_dump / MANIFEST).read_text())
        assert out["collections"] == {k: e["count"] for k, e in manifest["collections"].items()}
    finally:
        await mongo.client.drop_database(name)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["dump"], "--out"),
        (["dump", "--out", "{existing}"], "already exists"),
        (["dump", "--out", "{tmp}/no/such/parent/dump"], "is not a directory"),
        (["dump", "--out", ""], "does not name a new directory"),
        (["dump", "--out", "{tmp}/x", "--force"], "unrecognized arguments: --force"),
        (["restore"], "--from"),
        (["restore", "--from", "{tmp}/no-such-dump"], "is not a directory"),
        (["restore", "--from", "{dump}", "--force=yes"], "ignored explicit argument"),
        (["restore", "--from", "{dump}", "--forse"], "unrecognized arguments: --forse"),
    ],
)
async def test_bad_flags_exit_2_and_change_nothing(
    args, says, small_dump, settings, mongo, tmp_path
):
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "mine.txt").write_text("kept")
    given = [a.format(existing=existing, tmp=tmp_path, dump=small_dump) for a in ["admin", *args]]
    name, env = target(settings)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = await run_cli(*given, env=env)
    assert code == 2 and out == {}, (out, err)
    assert says in err and "usage:" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert [p.name for p in existing.iterdir()] == ["mine.txt"]
    assert await mongo.client[name].list_collection_names() == []


# --- the dump itself: whole or nothing, progress on a terminal only ---------------------


async def test_a_failed_dump_leaves_no_directory(small, tmp_path, monkeypatch):
    async def failing(*args: Any) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
        yield "leads", [{"_id": "lead_0000000000000000"}]
        raise RuntimeError("the store went away")

    monkeypatch.setattr(dump_module, "read_chatbot", failing)
    with pytest.raises(RuntimeError):
        await dump_module.dump(small[0], tmp_path / "dump", Progress(io.StringIO()))
    assert list(tmp_path.iterdir()) == []  # neither the dump nor its partial directory


async def test_a_chatbot_read_again_after_a_conflict_is_written_once(
    small, settings, mongo, tmp_path, monkeypatch
):
    calls: list[str] = []
    real = dump_reads.read_chatbot

    async def conflicting_once(*args: Any) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
        first = not calls
        calls.append(args[2])
        async for collection, docs in real(*args):
            yield collection, docs
            if first and collection == "leads":
                raise OperationFailure(
                    "WriteConflict", 112, {"errorLabels": ["TransientTransactionError"]}
                )

    monkeypatch.setattr(dump_module, "read_chatbot", conflicting_once)
    summary = await dump_module.dump(small[0], tmp_path / "dump", Progress(io.StringIO()))
    assert len(calls) > 1 and calls[0] == calls[1]  # the first chatbot was read twice
    name, env = target(settings)
    try:
        code, out, err = await run_cli(
            "admin", "restore", "--from", str(tmp_path / "dump"), env=env
        )
        assert code == 0, (out, err)
        assert out["collections"] == summary["collections"]
        leads = await mongo.client[name]["leads"].find({}, {"_id": 1}).to_list(None)
        assert len(leads) == len({doc["_id"] for doc in leads}) == summary["collections"]["leads"]
    finally:
        await mongo.client.drop_database(name)


def _read_all(fd: int, into: bytearray) -> None:
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other side closed
            return
        if not chunk:
            return
        into.extend(chunk)


async def test_progress_shows_on_a_terminal_only(small_dump, settings, mongo, tmp_path):
    name, env = target(settings)
    master, slave = os.openpty()
    shown = bytearray()
    reader = threading.Thread(target=_read_all, args=(master, shown), daemon=True)
    reader.start()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pollybot_leads",
            "admin",
            "restore",
            "--from",
            str(small_dump),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=slave,
        )
        os.close(slave)
        out, _ = await proc.communicate()
        reader.join(10)
    finally:
        os.close(master)
        await mongo.client.drop_database(name)
    assert proc.returncode == 0
    assert json.loads(out)["restored"] == str(small_dump)  # stdout: the JSON alone
    text = shown.decode()
    assert "verified" in text and "files against the manifest" in text
    assert "leads: 147" in text  # 150 seeded, 3 deleted
