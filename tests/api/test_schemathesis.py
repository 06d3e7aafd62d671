"""Schemathesis against a real server of the app: the document says what the server does.

Every phase runs (the document's examples, coverage of boundaries and missing or wrong
values, random fuzzing, stateful sequences along the document's links), with positive
and negative data and every check: no 5xx, status codes and headers the document lists,
bodies that match its schemas, schema-valid requests accepted, schema-invalid ones
refused. Examples per operation are bounded so the run takes well under a minute.

The rules OpenAPI 3.0 cannot express are stated in the document's prose and applied to
the generated data by ``schemathesis_hooks.py`` (see its docstring).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from pollybot_leads.app import create_app

from ..conftest import make_tenant

HOOKS = Path(__file__).resolve().parent / "schemathesis_hooks.py"
MAX_EXAMPLES = 25  # per operation and phase: about 700 cases in all
SEED = 20261127  # fixed: a failure reproduces (`st replay` and the printed curl)


async def test_schemathesis_finds_nothing(settings, mongo, accounts, leads_repo, tmp_path):
    tenant = await make_tenant(accounts, rate_limit_capacity=100_000, rate_limit_refill=10_000)
    # Leads for merges and duplicates reads to name (schemathesis_hooks.py): a target and
    # sources sharing its email.
    prepared = [
        (
            await leads_repo.create(
                chatbot_id=tenant.chatbot_id,
                workspace_id=tenant.workspace_id,
                fields={"name": f"Merge {n}", "email": "merge@example.com"},
            )
        )["id"]
        for n in range(12)
    ]
    # Scenarios of up to 10 steps (6 by default): long enough to follow a create's links
    # to a read, a change and a deletion whatever the drawn data.
    config = f'[parameters]\n"path.chatbotId" = "{tenant.chatbot_id}"\n'
    report = await run_schemathesis(
        settings,
        tmp_path,
        key=tenant.key,
        chatbot_id=tenant.chatbot_id,
        config=config,
        select=["--exclude-path-regex", "^/api/v1/admin/"],  # an admin key's: below
        leads=prepared,
    )
    cases = re.search(r"(\d+) generated", report)
    assert cases and int(cases.group(1)) >= 200, report[-3000:]
    links = re.search(r"API Links:\s+(\d+) covered / (\d+) selected", report)
    assert links and int(links.group(1)) >= 7, report[-3000:]  # every documented link used


async def test_schemathesis_finds_nothing_in_the_admin_api(settings, mongo, accounts, tmp_path):
    """The admin API with an admin key, on a workspace of its own (its deletion, drawn
    with ``confirm=true``, takes only that one). One check is left out: a workspace's or
    chatbot's deletion is accepted (202) and done by a background job, so a read a
    moment later rightly finds it gone, which ``ensure_resource_availability`` takes for
    a resource lost right after its creation (it models deletions that answer 200)."""
    tenant = await make_tenant(accounts)
    _, admin_key = await accounts.create_admin_key(name="schemathesis")
    config = (
        f'[parameters]\n"path.workspaceId" = "{tenant.workspace_id}"\n'
        f'"path.chatbotId" = "{tenant.chatbot_id}"\n"path.keyId" = "{tenant.key_id}"\n'
    )
    report = await run_schemathesis(
        settings,
        tmp_path,
        key=admin_key,
        chatbot_id=tenant.chatbot_id,
        config=config,
        select=[
            "--include-path-regex",
            "^/api/v1/admin/",
            "--exclude-checks",
            "ensure_resource_availability",
        ],
        max_examples=15,
    )
    cases = re.search(r"(\d+) generated", report)
    assert cases and int(cases.group(1)) >= 100, report[-3000:]


async def run_schemathesis(
    settings, tmp_path, *, key, chatbot_id, config, select, max_examples=MAX_EXAMPLES, leads=()
):
    """Run schemathesis with ``key`` against a server of its own (its bad-credential
    probes spend that server's per-address bucket) and return its report."""
    # Every drawn webhook endpoint is created: more than a workspace's default limit.
    client = TestClient(TestServer(create_app(settings.replace(webhook_max_endpoints=100_000))))
    await client.start_server()
    try:
        config_file = tmp_path / "schemathesis.toml"
        config_file.write_text(config + "[phases.stateful]\nmax-steps = 10\n")
        # fmt: off
        args = [
            "--config-file", str(config_file), "--no-color",
            "run", str(client.make_url("/api/docs/openapi.json")),
            "--header", f"Authorization: Bearer {key}",
            *select,
            "--phases", "examples,coverage,fuzzing,stateful",
            "--mode", "all",
            "--checks", "all",
            "--max-examples", str(max_examples),
            "--seed", str(SEED),
            "--workers", "1",  # hypothesis's lambda parsing is not thread-safe on 3.11
            "--request-timeout", "10",
            "--generation-database", "none",
            "--report-dir", str(tmp_path / "report"),
        ]
        # fmt: on
        env = {
            **os.environ,
            "SCHEMATHESIS_HOOKS": str(HOOKS),
            "PB_SCHEMATHESIS_CHATBOT_ID": chatbot_id,  # for chatbotIds
            "PB_SCHEMATHESIS_LEADS": ",".join(leads),  # for merges and duplicates reads
        }
        output = tmp_path / "schemathesis.txt"
        with output.open("wb") as sink:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "schemathesis.cli",
                *args,
                cwd=tmp_path,  # where schemathesis keeps its cache
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=sink,
                stderr=asyncio.subprocess.STDOUT,
            )
            try:
                await asyncio.wait_for(proc.wait(), timeout=240)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
    finally:
        await client.close()
    report = output.read_text(errors="replace")
    print(report[-3000:])  # the summary: shown with -s, and beside a failure
    assert proc.returncode == 0, report[-20000:]
    assert "WARNINGS" not in report, report[-5000:]  # e.g. unresolvable references
    return report
