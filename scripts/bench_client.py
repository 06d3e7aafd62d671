"""What the Python client costs its caller: CPU per call of ``pollybot_leads_client.Client``
against raw ``httpx.Client`` making the same calls (same URL, headers, body), side by side
in alternating rounds, against one API server in another process (its CPU is not
counted). Medians of this process's CPU per call; printed and written as JSON.

    python scripts/bench_client.py [--calls 500 --rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from bench_http import start_server, stop_server, wait_until_listening
from own_store import report, run_on_own_store

from pollybot_leads.accounts.repository import AccountRepository
from pollybot_leads.indexes import ensure_all_indexes
from pollybot_leads.store.client import Mongo

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "clients" / "python" / "src"))
from pollybot_leads_client import Client

DATABASE = "bench_client"


async def tenant(uri: str) -> tuple[str, str]:
    mongo = Mongo(uri, DATABASE)
    await mongo.connect()
    try:
        await ensure_all_indexes(mongo)
        accounts = AccountRepository(mongo)
        ws = (await accounts.create_workspace(name="client"))["id"]
        bot = (await accounts.create_chatbot(workspace_id=ws, name="client"))["id"]
        # A bucket the benchmark never empties: a 429 would be retried by the client
        # (after Retry-After) and answered at once to raw httpx.
        issued = await accounts.create_key(
            workspace_id=ws, rate_limit_capacity=1_000_000, rate_limit_refill=1_000_000.0
        )
        return bot, issued.secret
    finally:
        await mongo.close()


def measure(uri: str, args: argparse.Namespace) -> dict[str, Any]:
    bot, key = asyncio.run(tenant(uri))
    with tempfile.TemporaryDirectory(prefix="bench-client-") as workdir:
        server_args = argparse.Namespace(workers=1, api_driver=None, floor_journal=False)
        server = start_server("api", Path(workdir), uri, DATABASE, key, server_args)
        try:
            wait_until_listening(server)
            return compare(f"http://127.0.0.1:{server.port}", bot, key, args)
        finally:
            stop_server(server)


def compare(base: str, bot: str, key: str, args: argparse.Namespace) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
    url = f"{base}/api/v1/chatbots/{bot}/leads"
    client = Client(api_key=key, base_url=base, max_retries=0)  # a retry would be a failure
    raw = httpx.Client(timeout=10.0)
    lead = client.leads.create(bot, name="Bench", email="bench@example.com")

    def body(n: int) -> dict[str, Any]:
        return {"name": f"Lead {n}", "email": f"lead{n}@example.com"}

    def raw_get(n: int) -> Any:
        response = raw.get(f"{url}/{lead.id}", headers=headers)
        assert response.status_code == 200, response.text
        return response.json()

    def raw_create(n: int) -> Any:
        keyed = {**headers, "Idempotency-Key": str(uuid.uuid4())}
        response = raw.post(url, json=body(n), headers=keyed)
        assert response.status_code == 201, response.text
        return response.json()

    calls = {
        ("get", "client"): lambda n: client.leads.get(bot, lead.id),
        ("get", "raw"): raw_get,
        ("create", "client"): lambda n: client.leads.create(bot, **body(n)),
        ("create", "raw"): raw_create,
    }
    runs: dict[str, list[float]] = {f"{op}/{who}": [] for op, who in calls}
    for _ in range(args.rounds):
        for (op, who), call in calls.items():
            began = time.process_time()
            for n in range(args.calls):
                call(n)
            runs[f"{op}/{who}"].append((time.process_time() - began) * 1e6 / args.calls)
    client.close()
    raw.close()
    medians = {name: round(statistics.median(values), 1) for name, values in runs.items()}
    return {
        "calls_per_round": args.calls,
        "rounds": args.rounds,
        "cpu_us_per_call_median": medians,
        "ratio_client_vs_raw": {
            op: round(medians[f"{op}/client"] / medians[f"{op}/raw"], 3) for op in ("get", "create")
        },
        "runs_cpu_us_per_call": {k: [round(v, 1) for v in vs] for k, vs in runs.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default="bench-client.json")
    args = parser.parse_args()

    async def run(uri: str, pid: int) -> dict[str, Any]:
        return await asyncio.to_thread(measure, uri, args)

    report(run_on_own_store("bench-client-", run), args.out)


if __name__ == "__main__":
    main()
