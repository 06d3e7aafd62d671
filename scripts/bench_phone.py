"""What a phone costs a create: creates with a phone against the same creates without,
side by side (rounds alternate), measuring this process's CPU (the API, in process as the
tests run it, and the client, the same in both) and the store's.

A phone is parsed to E.164 (phonenumbers), stored twice (as sent and as its key) and
indexed (``by_phone``); the suppression check reads its keyed hash too.

    python scripts/bench_phone.py [--creates 500 --rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from bench_http import cpu_seconds  # scripts/ is first on sys.path
from own_store import report, run_on_own_store

from pollybot_leads.accounts.repository import AccountRepository
from pollybot_leads.app import create_app
from pollybot_leads.indexes import ensure_all_indexes
from pollybot_leads.settings import Settings
from pollybot_leads.store.client import Mongo

CONCURRENCY = 8


def lead(with_phone: bool) -> dict[str, Any]:
    tag = secrets.token_hex(5)
    body: dict[str, Any] = {"name": f"Person {tag}", "email": f"{tag}@example.com"}
    if with_phone:
        body["phone"] = f"+1 (415) 555-{secrets.randbelow(10000):04d}"
    return body


async def creates(api: TestClient, url: str, headers: dict[str, str], n: int, phone: bool) -> None:
    queue = list(range(n))

    async def client() -> None:
        while queue:
            queue.pop()
            async with api.post(url, json=lead(phone), headers=headers) as resp:
                assert resp.status == 201, await resp.text()

    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))


async def run(uri: str, store_pid: int, args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings(
        mongodb_uri=uri,
        mongodb_database="bench_phone",
        ratelimit_enabled=False,
        webhooks_deliver=False,
        cursor_secret="bench",
    )
    mongo = Mongo(uri, "bench_phone")
    await mongo.connect()
    await ensure_all_indexes(mongo)
    accounts = AccountRepository(mongo)
    ws = (await accounts.create_workspace(name="phones"))["id"]
    bot = (await accounts.create_chatbot(workspace_id=ws, name="phones"))["id"]
    key = (await accounts.create_key(workspace_id=ws)).secret
    api = TestClient(TestServer(create_app(settings)))
    await api.start_server()
    url, headers = f"/api/v1/chatbots/{bot}/leads", {"Authorization": f"Bearer {key}"}
    runs: dict[str, list[dict[str, float]]] = {"without": [], "with": []}
    try:
        await creates(api, url, headers, 200, True)  # warm up both paths
        await creates(api, url, headers, 200, False)
        for _ in range(args.rounds):
            for name in ("without", "with"):
                cpu0, store0, began = (
                    time.process_time(),
                    cpu_seconds([store_pid]),
                    time.perf_counter(),
                )
                await creates(api, url, headers, args.creates, name == "with")
                runs[name].append(
                    {
                        "process_cpu_ms_per_create": (time.process_time() - cpu0)
                        * 1000
                        / args.creates,
                        "store_cpu_ms_per_create": (cpu_seconds([store_pid]) - store0)
                        * 1000
                        / args.creates,
                        "wall_ms_per_create": (time.perf_counter() - began) * 1000 / args.creates,
                    }
                )
    finally:
        await api.close()
        await mongo.close()

    def median(name: str, field: str) -> float:
        return round(statistics.median(r[field] for r in runs[name]), 3)

    fields = ("process_cpu_ms_per_create", "store_cpu_ms_per_create", "wall_ms_per_create")
    return {
        "creates_per_round": args.creates,
        "rounds": args.rounds,
        "concurrency": CONCURRENCY,
        "median": {name: {f: median(name, f) for f in fields} for name in runs},
        "ratio_with_vs_without": {
            f: round(median("with", f) / median("without", f), 3) for f in fields
        },
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--creates", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default="bench-phone.json")
    args = parser.parse_args()
    result = run_on_own_store("bench-phone-", lambda uri, pid: run(uri, pid, args))
    report(result, args.out)


if __name__ == "__main__":
    main()
