"""The client's examples, run as the README shows them: as scripts, in processes of their
own, against a real server that delivers webhooks; and the README holds them word for
word."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from pollybot_leads_client import AsyncClient

from pollybot_leads.settings import Settings
from pollybot_leads.store.client import Mongo
from tests.conftest import Tenant, own_database, serving
from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "clients" / "python" / "examples"
SOURCE = ROOT / "clients" / "python" / "src"

# A database of their own: the app here delivers webhooks, and a dispatcher on the
# session's database would first work through every event the other tests wrote.
settings, mongo, accounts, api = own_database("client_examples")


@pytest.fixture(scope="module")
async def delivering(settings: Settings, mongo: Mongo) -> AsyncIterator[TestClient]:
    fast = settings.replace(webhooks_deliver=True, webhook_poll_seconds=0.05)
    async with serving(fast) as client:
        yield client


def env_for(server: TestClient, tenant: Tenant) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(SOURCE),
        "POLLYBOT_API_KEY": tenant.key,
        "POLLYBOT_CHATBOT_ID": tenant.chatbot_id,
        "POLLYBOT_BASE_URL": str(server.make_url("")).rstrip("/"),
    }


async def run(script: str, env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLES / script), *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def test_the_quickstart_creates_lists_updates_and_is_refused_a_stale_update(
    delivering: TestClient, tenant: Tenant
):
    done = await run("quickstart.py", env_for(delivering, tenant))
    out, err = await asyncio.wait_for(done.communicate(), 60)
    assert done.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    created = lines[0].split()
    assert created[:3] == ["created", created[1], "+14155552671"] and created[1].startswith("lead_")
    assert lines[1:] == [
        f"listed {created[1]} grace@example.com",
        "updated contacted",
        "refused 412 PRECONDITION_FAILED",
    ]
    async with AsyncClient(api_key=tenant.key, base_url=env_for(delivering, tenant)[
        "POLLYBOT_BASE_URL"
    ]) as c:  # fmt: skip
        assert (await c.leads.get(tenant.chatbot_id, created[1])).status == "contacted"


async def test_the_receiver_verifies_and_prints_each_delivery_once(
    delivering: TestClient, tenant: Tenant
):
    env = env_for(delivering, tenant)
    receiver = await run("receiver.py", env, "--port", str(free_port()))
    try:
        assert receiver.stdout is not None
        first = await asyncio.wait_for(receiver.stdout.readline(), 30)
        assert first.decode().startswith("receiving for endpoint wh_"), first
        async with AsyncClient(api_key=tenant.key, base_url=env["POLLYBOT_BASE_URL"]) as c:
            lead = await c.leads.create(tenant.chatbot_id, name="Hook", email="hook@example.com")
            await c.leads.update(tenant.chatbot_id, lead.id, status="contacted")
            got = [
                (await asyncio.wait_for(receiver.stdout.readline(), 30)).decode().split()
                for _ in range(2)
            ]
            assert sorted(got) == [
                ["lead.created", lead.id, "hook@example.com"],
                ["lead.updated", lead.id, "hook@example.com"],
            ]
            endpoint = first.decode().split()[-1]
            for _ in range(100):  # the attempt is logged just after the answer
                deliveries = await c.webhooks.deliveries(endpoint)
                if len(deliveries) == 2:
                    break
                await asyncio.sleep(0.1)
            assert [d.status_code for d in deliveries] == [204, 204]
    finally:
        receiver.send_signal(signal.SIGTERM)
        await asyncio.wait_for(receiver.wait(), 30)
    async with AsyncClient(api_key=tenant.key, base_url=env["POLLYBOT_BASE_URL"]) as c:
        assert await c.webhooks.list() == []  # it removed its endpoint when stopped


def test_the_readme_shows_the_examples_as_they_are():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Python client") :]
    section = section[: section.index("\n## ")]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    scripts = {name: (EXAMPLES / name).read_text() for name in ("quickstart.py", "receiver.py")}
    shown = {name for block in blocks for name, text in scripts.items() if block in text}
    assert len(blocks) == 2 and shown == set(scripts), "a README block is not in an example"
    for name in scripts:
        assert f".venv/bin/python clients/python/examples/{name}" in section
