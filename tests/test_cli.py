"""The pollybot-leads command, run as a user runs it: a subprocess printing JSON."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp import ClientSession

from pollybot_leads.store.embedded import free_port, port_open


def run_cli(*args: str, env: dict[str, str]) -> tuple[int, dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "pollybot_leads", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout.strip()
    return proc.returncode, (json.loads(out) if out else {"stderr": proc.stderr})


@pytest.fixture
def uri_env(settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL",)}
    env.update(
        MONGODB_URI=settings.mongodb_uri,
        MONGODB_DATABASE=settings.mongodb_database,
        LOG_LEVEL="WARNING",
    )
    return env


async def test_admin_commands_manage_keys_that_work(uri_env, api):
    code, ws = run_cli("admin", "create-workspace", "--name", "CLI Co", env=uri_env)
    assert code == 0 and re.match(r"^ws_[0-9a-f]{16}$", ws["id"]) and ws["name"] == "CLI Co"
    code, cb = run_cli(
        "admin", "create-chatbot", "--workspace", ws["id"], "--name", "Helper", env=uri_env
    )
    assert code == 0 and cb["workspaceId"] == ws["id"] and cb["id"].startswith("cb_")
    code, key = run_cli(
        "admin",
        "create-key",
        "--workspace",
        ws["id"],
        "--name",
        "zapier",
        "--rate-limit-capacity",
        "7",
        "--rate-limit-refill",
        "0.5",
        env=uri_env,
    )
    assert code == 0 and key["key"].startswith("sk-workspace_") and key["id"].startswith("key_")
    assert key["workspaceId"] == ws["id"] and key["rateLimit"] == {
        "capacity": 7,
        "refillPerSecond": 0.5,
    }
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", key["createdAt"])
    headers = {"Authorization": f"Bearer {key['key']}"}
    resp = await api.get(f"/api/v1/chatbots/{cb['id']}/leads", headers=headers)
    assert resp.status == 200 and resp.headers["X-RateLimit-Limit"] == "7"

    code, listed = run_cli("admin", "list-keys", "--workspace", ws["id"], env=uri_env)
    assert code == 0 and [k["id"] for k in listed["keys"]] == [key["id"]]
    assert key["key"] not in json.dumps(listed) and "digest" not in json.dumps(listed)

    code, changed = run_cli(
        "admin", "set-rate-limit", key["id"], "--capacity", "50", "--refill", "5", env=uri_env
    )
    assert code == 0 and changed["rateLimit"] == {"capacity": 50, "refillPerSecond": 5.0}

    code, revoked = run_cli("admin", "revoke-key", key["id"], env=uri_env)
    assert code == 0 and revoked["revoked"] is True
    time.sleep(1.2)  # the test profile trusts a resolved key for 1 s
    resp = await api.get(f"/api/v1/chatbots/{cb['id']}/leads", headers=headers)
    assert resp.status == 401


async def test_create_key_makes_a_scoped_chatbot_bound_expiring_key(uri_env, api):
    code, ws = run_cli("admin", "create-workspace", "--name", "Scoped", env=uri_env)
    bots = [
        run_cli("admin", "create-chatbot", "--workspace", ws["id"], "--name", n, env=uri_env)[1]
        for n in ("one", "two")
    ]
    code, key = run_cli(
        "admin",
        "create-key",
        "--workspace",
        ws["id"],
        "--scopes",
        "leads:read",
        "--chatbots",
        bots[0]["id"],
        "--expires-at",
        "2099-01-31T23:59:59+01:00",
        env=uri_env,
    )
    assert code == 0, key
    assert key["scopes"] == ["leads:read"] and key["chatbotIds"] == [bots[0]["id"]]
    assert key["expiresAt"] == "2099-01-31T22:59:59.000Z"
    headers = {"Authorization": f"Bearer {key['key']}"}
    first, second = (f"/api/v1/chatbots/{bot['id']}/leads" for bot in bots)
    assert (await api.get(first, headers=headers)).status == 200
    assert (await api.get(second, headers=headers)).status == 404
    resp = await api.post(first, json={"name": "A", "email": "a@example.com"}, headers=headers)
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "INSUFFICIENT_SCOPE"
    code, out = run_cli(
        "admin", "create-key", "--workspace", ws["id"], "--scopes", "leads:all", env=uri_env
    )
    assert code == 1 and out["error"]["code"] == "VALIDATION_ERROR"
    code, out = run_cli(
        "admin",
        "create-key",
        "--workspace",
        ws["id"],
        "--chatbots",
        "cb_0000000000000000",
        env=uri_env,
    )
    assert code == 1 and out["error"]["code"] == "VALIDATION_ERROR"


def test_admin_errors_are_json_and_nonzero(uri_env):
    code, out = run_cli(
        "admin", "create-chatbot", "--workspace", "ws_0000000000000000", "--name", "x", env=uri_env
    )
    assert code == 1 and out["error"]["code"] == "WORKSPACE_NOT_FOUND"
    code, out = run_cli("admin", "revoke-key", "key_0000000000000000", env=uri_env)
    assert code == 1 and out["error"]["code"] == "API_KEY_NOT_FOUND"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pollybot_leads",
            "admin",
            "set-rate-limit",
            "key_0000000000000000",
            "--capacity",
            "0",
            "--refill",
            "1",
        ],
        env=uri_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "capacity" in proc.stderr


@pytest.fixture
def embedded_env(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MONGODB_URI", "REDIS_URL", "MONGODB_DATABASE")
    }
    env.update(
        PB_DATA_DIR=str(tmp_path / "var"), PB_EMBEDDED_PORT=str(free_port()), LOG_LEVEL="WARNING"
    )
    return env


def _wait_for_banner(proc: subprocess.Popen, timeout: float = 60) -> str:
    deadline, lines = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Stop with Ctrl-C" in line:
            return "".join(lines)
    raise AssertionError("no banner: " + "".join(lines))


async def test_serve_embedded_prints_a_working_curl_and_stops_its_store(embedded_env):
    port = free_port()
    env = {**embedded_env, "PORT": str(port)}
    data_dir = Path(env["PB_DATA_DIR"])

    def start():
        return subprocess.Popen(
            [sys.executable, "-m", "pollybot_leads", "serve"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    proc = start()
    try:
        banner = _wait_for_banner(proc)
        key = re.search(r"Bearer (sk-workspace_[A-Za-z0-9_-]+)", banner).group(1)
        url = re.search(r"curl -s -X POST (\S+)", banner).group(1)
        demo = json.loads((data_dir / "demo-credentials.json").read_text())
        assert demo["key"] == key
        assert (data_dir / "demo-credentials.json").stat().st_mode & 0o077 == 0
        async with ClientSession() as http:
            resp = await http.post(
                url,
                json={"name": "John Doe", "email": "john@example.com"},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert resp.status == 201
        # An admin command while serving uses the running store.
        code, ws = run_cli("admin", "create-workspace", "--name", "Second", env=env)
        assert code == 0 and ws["id"].startswith("ws_")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
        proc.stdout.close()
    assert proc.returncode == 0
    store_port = int(env["PB_EMBEDDED_PORT"])
    assert not port_open("127.0.0.1", store_port)  # no orphaned store
    assert not (data_dir / "secantusdb.pid").exists()

    # Restart: the data is still there and the demo is not created again.
    proc = start()
    try:
        banner = _wait_for_banner(proc)
        assert key in banner
        async with ClientSession() as http:
            resp = await http.get(url, headers={"Authorization": f"Bearer {key}"})
            assert (await resp.json())["data"]["pagination"]["total"] == 1
    finally:
        proc.terminate()
        proc.wait(60)
        proc.stdout.close()
    assert proc.returncode == 0
    assert not port_open("127.0.0.1", store_port)


def test_admin_works_in_embedded_mode_without_a_server(embedded_env):
    code, ws = run_cli("admin", "create-workspace", "--name", "Offline", env=embedded_env)
    assert code == 0
    code, listed = run_cli("admin", "list-keys", "--workspace", ws["id"], env=embedded_env)
    assert code == 0 and listed == {"workspaceId": ws["id"], "keys": []}
    assert not port_open("127.0.0.1", int(embedded_env["PB_EMBEDDED_PORT"]))


async def test_recount_repairs_lead_counters_after_a_bulk_load(uri_env, api, accounts, leads_repo):
    from datetime import UTC, datetime

    from pollybot_leads.leads.documents import build_lead_document

    from .conftest import make_tenant

    tenant = await make_tenant(accounts)
    now = datetime.now(UTC)
    docs = [
        build_lead_document(
            tenant.chatbot_id,
            tenant.workspace_id,
            {"name": f"L{i}", "email": f"l{i}@x.io", "status": "lost" if i % 2 else "new"},
            now,
        )
        for i in range(6)
    ]
    await leads_repo.insert_many(docs=docs)
    code, out = run_cli("admin", "recount", "--chatbot", tenant.chatbot_id, env=uri_env)
    assert code == 0 and out["leadCounts"]["total"] == 6
    assert out["leadCounts"]["byStatus"]["lost"] == 3
    resp = await api.get(tenant.leads_url, params={"status": "lost"}, headers=tenant.headers)
    assert (await resp.json())["data"]["pagination"]["total"] == 3
    code, out = run_cli("admin", "recount", "--chatbot", "cb_0000000000000000", env=uri_env)
    assert code == 1 and out["error"]["code"] == "NOT_FOUND"


def test_a_killed_server_leaves_no_store_behind(embedded_env):
    port = free_port()
    env = {**embedded_env, "PORT": str(port)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pollybot_leads", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        _wait_for_banner(proc)
        store_port = int(env["PB_EMBEDDED_PORT"])
        assert port_open("127.0.0.1", store_port)
        proc.kill()  # no chance to clean up: the kernel must stop the store
        proc.wait(30)
        deadline = time.monotonic() + 15
        while port_open("127.0.0.1", store_port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not port_open("127.0.0.1", store_port)
    finally:
        proc.stdout.close()


def test_cli_version_and_help():
    from importlib import metadata

    proc = subprocess.run(
        [sys.executable, "-m", "pollybot_leads", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"pollybot-leads {metadata.version('pollybot-leads')}"


def test_every_command_and_option_has_help():
    import argparse

    from pollybot_leads.cli import build_parser

    def walk(parser: argparse.ArgumentParser, path: str):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {a.dest: a.help for a in action._choices_actions}
                for name, sub in action.choices.items():
                    assert helps.get(name), f"{path} {name}: no help"
                    assert sub.description, f"{path} {name}: no description"
                    yield from walk(sub, f"{path} {name}")
            else:
                yield path, action

    checked = 0
    for path, action in walk(build_parser(), "pollybot-leads"):
        assert action.help, f"{path} {action.option_strings or action.dest}: no help"
        checked += 1
    assert checked > 20


def test_a_busy_port_is_named_with_what_to_do_not_a_traceback(embedded_env):
    import socket

    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        proc = subprocess.run(
            [sys.executable, "-m", "pollybot_leads", "serve"],
            env={**embedded_env, "PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"error: something is already listening on 127.0.0.1:{port}. Stop it, or serve on "
        f"another port: PORT={port + 1} make run (or: serve --port {port + 1})"
    )


def test_a_bad_environment_value_is_named_on_the_command_line(embedded_env):
    proc = subprocess.run(
        [sys.executable, "-m", "pollybot_leads", "serve"],
        env={**embedded_env, "PORT": "abc"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "PORT must be an integer, not 'abc'" in proc.stderr


def test_embedded_data_lives_where_the_banner_says(tmp_path, monkeypatch):
    from pollybot_leads.store.embedded import EmbeddedStore

    monkeypatch.chdir(tmp_path)
    store = EmbeddedStore(Path("var"), free_port())  # relative, as `make run` passes it
    with store:
        assert store.storage_path == tmp_path / "var" / "secantusdb"
    assert (tmp_path / "var" / "secantusdb").is_dir()
    assert not (tmp_path / "var" / "var").exists()
