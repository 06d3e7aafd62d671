"""motor against PyMongo's AsyncMongoClient, through the lead repository: `make bench-driver`.

Both drivers run the same repository operations (create, get, a metadata merge, a list
page) against the same server, in interleaved rounds so that a noisy machine affects
both alike. For each it reports operations per second and the CPU this process spent per
operation (the driver's cost to the API server), as medians over the rounds, and the
ratio PyMongo / motor. Without MONGODB_URI it starts its own SecantusDB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from pollybot_leads.accounts.repository import AccountRepository
from pollybot_leads.indexes import ensure_all_indexes
from pollybot_leads.leads.queries import LeadQuery
from pollybot_leads.leads.repository import LeadRepository
from pollybot_leads.store.client import Mongo
from pollybot_leads.store.embedded import EmbeddedStore, free_port

DRIVERS = ("motor", "pymongo")
CONCURRENCY = 16


async def _run(ops: int, work) -> tuple[float, float]:
    """Seconds of wall time and of this process's CPU for ``ops`` calls of ``work(i)``."""
    queue = iter(range(ops))

    async def worker() -> None:
        for i in queue:
            await work(i)

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return time.perf_counter() - wall, time.process_time() - cpu


async def round_for(repo: LeadRepository, chatbot: dict, ops: int) -> dict[str, dict]:
    created: list[str] = []

    async def create(i: int) -> None:
        lead = await repo.create(
            chatbot_id=chatbot["id"],
            workspace_id=chatbot["workspaceId"],
            fields={
                "name": f"Bench Lead {i}",
                "email": f"bench{i}@example.com",
                "metadata": {"n": i},
            },
        )
        created.append(lead["id"])

    async def get(i: int) -> None:
        await repo.get(chatbot_id=chatbot["id"], lead_id=created[i % len(created)])

    async def merge(i: int) -> None:
        await repo.update(
            chatbot_id=chatbot["id"],
            lead_id=created[i % len(created)],
            changes={"metadata": {f"k{i % 7}": i}},
        )

    async def page(i: int) -> None:
        await repo.list(chatbot_id=chatbot["id"], query=LeadQuery(limit=10))

    out = {}
    for name, work in (("create", create), ("get", get), ("update", merge), ("list", page)):
        wall, cpu = await _run(ops, work)
        out[name] = {"ops_per_s": ops / wall, "cpu_us_per_op": cpu / ops * 1e6}
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ops", type=int, default=400, help="operations per kind per round")
    parser.add_argument("--out", default="bench-driver.json")
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="pollybot-bench-")
    store = None
    uri = os.environ.get("MONGODB_URI")
    if not uri:
        store = EmbeddedStore(Path(tmp.name), free_port())
        store.start()
        uri = store.uri
    database = f"pollybot_bench_{random.randrange(16**6):06x}"
    clients = {driver: Mongo(uri, database, driver) for driver in DRIVERS}
    samples: dict[str, dict[str, list[dict]]] = {d: {} for d in DRIVERS}
    try:
        for client in clients.values():
            await client.connect()
        await ensure_all_indexes(clients["motor"])
        accounts = AccountRepository(clients["motor"])
        ws = await accounts.create_workspace(name="Driver bench")
        for round_no in range(args.rounds):
            order = DRIVERS if round_no % 2 == 0 else DRIVERS[::-1]
            for driver in order:
                chatbot = await accounts.create_chatbot(workspace_id=ws["id"], name=driver)
                result = await round_for(LeadRepository(clients[driver]), chatbot, args.ops)
                for op, figures in result.items():
                    samples[driver].setdefault(op, []).append(figures)
            print(f"  round {round_no + 1}/{args.rounds} done", flush=True)
    finally:
        await clients["motor"].client.drop_database(database)
        for mongo in clients.values():
            await mongo.close()
        if store is not None:
            store.stop()
        tmp.cleanup()

    report: dict[str, dict] = {}
    print(f"\n{'operation':10} {'driver':8} {'ops/s':>9} {'CPU µs/op':>10}")
    for op in ("create", "get", "update", "list"):
        row = {}
        for driver in DRIVERS:
            runs = samples[driver][op]
            row[driver] = {
                "ops_per_s": round(statistics.median(r["ops_per_s"] for r in runs), 1),
                "cpu_us_per_op": round(statistics.median(r["cpu_us_per_op"] for r in runs), 1),
            }
            print(
                f"{op:10} {driver:8} {row[driver]['ops_per_s']:>9} "
                f"{row[driver]['cpu_us_per_op']:>10}"
            )
        row["pymongo_over_motor"] = {
            key: round(row["pymongo"][key] / row["motor"][key], 3)
            for key in ("ops_per_s", "cpu_us_per_op")
        }
        print(
            f"{op:10} {'ratio':8} {row['pymongo_over_motor']['ops_per_s']:>9} "
            f"{row['pymongo_over_motor']['cpu_us_per_op']:>10}   (PyMongo / motor)"
        )
        report[op] = row
    meta = {
        "rounds": args.rounds,
        "ops": args.ops,
        "concurrency": CONCURRENCY,
        "store": "MONGODB_URI" if os.environ.get("MONGODB_URI") else "embedded SecantusDB",
    }
    Path(args.out).write_text(json.dumps({**meta, "results": report}, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
