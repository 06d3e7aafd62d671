"""The webhook admin commands and `pollybot-leads worker`, run as a user runs them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import pytest

from tests.conftest import make_tenant
from tests.test_cli import run_cli

from .conftest import emit
from .receiver import Receiver


@pytest.fixture
def cli_env(settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PB_CONFIG")}
    env.update(
        MONGODB_URI=settings.mongodb_uri,
        MONGODB_DATABASE=settings.mongodb_database,
        LOG_LEVEL="WARNING",
    )
    return env


async def test_admin_commands_manage_endpoints(cli_env, accounts):
    tenant = await make_tenant(accounts)
    code, made = run_cli(
        "admin", "create-webhook", "--workspace", tenant.workspace_id,
        "--url", "https://93.184.215.14/hook", "--event", "lead.created", env=cli_env,
    )  # fmt: skip
    assert code == 0 and made["id"].startswith("wh_") and made["secret"].startswith("whsec_")
    assert made["events"] == ["lead.created"]
    code, refused = run_cli(
        "admin", "create-webhook", "--workspace", tenant.workspace_id,
        "--url", "https://127.0.0.1/hook", env=cli_env,
    )  # fmt: skip
    assert code == 1 and refused["error"]["code"] == "VALIDATION_ERROR"
    assert "loopback" in refused["error"]["message"]
    code, listed = run_cli(
        "admin", "list-webhooks", "--workspace", tenant.workspace_id, env=cli_env
    )
    assert code == 0 and [w["id"] for w in listed["webhooks"]] == [made["id"]]
    assert made["secret"] not in json.dumps(listed)
    code, changed = run_cli("admin", "update-webhook", made["id"], "--disable", env=cli_env)
    assert code == 0 and changed["enabled"] is False
    code, rotated = run_cli("admin", "rotate-webhook-secret", made["id"], env=cli_env)
    assert code == 0 and rotated["secret"] != made["secret"]
    code, replay = run_cli("admin", "replay-webhook", made["id"], "--after", "0", env=cli_env)
    assert code == 0 and replay["chatbotIds"] == [tenant.chatbot_id]
    code, log = run_cli("admin", "webhook-deliveries", made["id"], env=cli_env)
    assert code == 0 and log["deliveries"] == []
    code, refused = run_cli("admin", "delete-webhook", made["id"], env=cli_env)
    assert code == 1 and refused["error"]["code"] == "CONFIRMATION_REQUIRED"
    code, gone = run_cli("admin", "delete-webhook", made["id"], "--confirm", env=cli_env)
    assert code == 0 and gone["deleted"] is True
    code, missing = run_cli("admin", "get-webhook", made["id"], env=cli_env)
    assert code == 1 and missing["error"]["code"] == "WEBHOOK_NOT_FOUND"


async def test_the_worker_command_delivers_and_stops_on_sigterm(cli_env, mongo, accounts, webhooks):
    tenant = await make_tenant(accounts)
    receiver = await Receiver().start()
    try:
        await webhooks.create(
            workspace_id=tenant.workspace_id,
            url=receiver.url,
            events=["lead.created"],
            chatbot_ids=[],
            description=None,
        )
        env = {**cli_env, "WEBHOOK_ALLOW_PRIVATE": "1", "WEBHOOK_ALLOW_HTTP": "1"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pollybot_leads", "worker",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line.strip() == b"Delivering webhooks"
            [event] = await emit(mongo, tenant)
            [got] = await receiver.wait_for(1)
            assert got.headers["webhook-id"] == event["_id"]
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 20) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    finally:
        await receiver.stop()
