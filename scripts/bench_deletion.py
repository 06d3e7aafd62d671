"""What deleting a large workspace costs the others: another workspace's GET and create
throughput while a workspace of ``--leads`` leads is deleted, side by side with the same
load just before (no deletion running).

Starts its own SecantusDB and the API (in this process, as ``serve`` runs deletion jobs:
in the serving process, giving way to its requests). Seeds the doomed workspace through
the batch route and the other workspace with ``--others`` leads, then for each phase
(``get``: one lead by id; ``create``) runs ``--clients`` clients for ``--seconds``
before the deletion and again while it runs, counting answers per second. Medians of
the per-second counts are compared; the deletion's own time (under the load, then to its
end) and the store's CPU are reported too. Figures are printed and written as JSON.

    python scripts/bench_deletion.py [--leads 20000 --others 1000 --clients 8 --seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from bench_http import cpu_seconds  # scripts/ is first on sys.path
from own_store import report, run_on_own_store

from pollybot_leads.accounts.repository import AccountRepository
from pollybot_leads.app import create_app
from pollybot_leads.indexes import ensure_all_indexes
from pollybot_leads.settings import Settings
from pollybot_leads.store.client import Mongo


def person() -> dict[str, Any]:
    tag = secrets.token_hex(6)
    return {"name": f"Person {tag}", "email": f"{tag}@example.com", "source": "web"}


async def seed(api: TestClient, key: str, chatbot: str, count: int) -> list[str]:
    ids: list[str] = []
    for start in range(0, count, 100):
        items = [person() for _ in range(min(100, count - start))]
        resp = await api.post(
            f"/api/v1/chatbots/{chatbot}/leads/batch",
            json={"leads": items},
            headers={"Authorization": f"Bearer {key}"},
        )
        body = await resp.json()
        assert resp.status == 200, body
        ids += [r["lead"]["id"] for r in body["data"]["results"] if r.get("lead")]
    return ids


async def load(
    seconds: float, clients: int, request: Callable[[], Awaitable[int]]
) -> dict[str, Any]:
    """``clients`` loops of ``request`` for ``seconds``: answers per whole second."""
    began = time.monotonic()
    per_second = [0] * int(seconds)
    statuses: dict[int, int] = {}

    async def client() -> None:
        while (now := time.monotonic() - began) < seconds:
            status = await request()
            statuses[status] = statuses.get(status, 0) + 1
            slot = int(time.monotonic() - began)
            if slot < len(per_second) and 200 <= status < 300:
                per_second[slot] += 1
            del now

    await asyncio.gather(*(client() for _ in range(clients)))
    return {"per_second": per_second, "median": statistics.median(per_second), "statuses": statuses}


async def run(uri: str, store_pid: int, args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings(
        mongodb_uri=uri,
        mongodb_database="bench_deletion",
        ratelimit_enabled=False,
        webhooks_deliver=False,
        cursor_secret="bench",
    )
    mongo = Mongo(uri, "bench_deletion")
    await mongo.connect()
    await ensure_all_indexes(mongo)
    accounts = AccountRepository(mongo)
    _, admin_key = await accounts.create_admin_key(name="bench")
    tenants = []
    for name in ("doomed", "other"):
        ws = (await accounts.create_workspace(name=name))["id"]
        bot = (await accounts.create_chatbot(workspace_id=ws, name=name))["id"]
        tenants.append((ws, bot, (await accounts.create_key(workspace_id=ws)).secret))
    (doomed_ws, doomed_bot, doomed_key), (_, bot, key) = tenants
    api = TestClient(TestServer(create_app(settings)))
    await api.start_server()
    headers = {"Authorization": f"Bearer {key}"}
    rng = random.Random(1)
    try:
        began = time.perf_counter()
        await seed(api, doomed_key, doomed_bot, args.leads)
        ids = await seed(api, key, bot, args.others)
        seeded = time.perf_counter() - began

        async def get() -> int:
            async with api.get(
                f"/api/v1/chatbots/{bot}/leads/{rng.choice(ids)}", headers=headers
            ) as r:
                await r.read()
                return r.status

        async def create() -> int:
            async with api.post(
                f"/api/v1/chatbots/{bot}/leads", json=person(), headers=headers
            ) as r:
                await r.read()
                return r.status

        phases = {"get": get, "create": create}
        before = {n: await load(args.seconds, args.clients, f) for n, f in phases.items()}

        cpu0, began = cpu_seconds([store_pid]), time.perf_counter()
        resp = await api.delete(
            f"/api/v1/admin/workspaces/{doomed_ws}",
            params={"confirm": "true"},
            headers={"Authorization": f"Bearer {admin_key}"},
        )
        assert resp.status == 202, await resp.text()
        during = {n: await load(args.seconds, args.clients, f) for n, f in phases.items()}
        job = await mongo.db["deletion_jobs"].find_one({"_id": doomed_ws})
        removed_under_load = (job or {}).get("removed", {}).get("leads", 0)
        still_running = bool(job and job["state"] == "running")
        while (job := await mongo.db["deletion_jobs"].find_one({"_id": doomed_ws}))[
            "state"
        ] != "done":
            await asyncio.sleep(0.2)
        deletion_seconds = time.perf_counter() - began
        store_cpu = cpu_seconds([store_pid]) - cpu0
    finally:
        await api.close()
        await mongo.close()
    return {
        "leads_deleted": args.leads,
        "other_workspace_leads": args.others,
        "clients": args.clients,
        "seconds_per_window": args.seconds,
        "seed_seconds": round(seeded, 1),
        "before": before,
        "during": during,
        "ratio_during_vs_before": {
            n: round(during[n]["median"] / before[n]["median"], 3) if before[n]["median"] else None
            for n in phases
        },
        "deletion": {
            "still_running_at_end_of_load": still_running,
            "leads_removed_under_load": removed_under_load,
            "seconds_to_done": round(deletion_seconds, 1),
            "store_cpu_seconds": round(store_cpu, 1),
            "removed": job.get("removed"),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--leads", type=int, default=20000)
    parser.add_argument("--others", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", default="bench-deletion.json")
    args = parser.parse_args()
    result = run_on_own_store("bench-deletion-", lambda uri, pid: run(uri, pid, args))
    report(result, args.out)


if __name__ == "__main__":
    main()
