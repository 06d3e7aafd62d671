"""What a chatbot's event sequence costs a write when the store holds many chatbots:
`make bench-sequence`.

Every lead write takes the next numbers of its chatbot's event sequence (one document
per chatbot in ``event_sequences``) in its transaction. On SecantusDB 0.7.0b3 a
``findAndModify`` by ``_id`` scans the whole collection (store/quirks.py,
``find_and_modify_scans``), so the store's cost per write grew with the number of
chatbots. This runs the same creates through the lead repository twice, side by side
(rounds alternate): with the workaround (an update, then a read) and without it (one
findAndModify), on one SecantusDB holding ``--chatbots`` other chatbots' sequences.
Per round: wall ms per create (``--concurrency`` at once) and the store's CPU per create.

    python scripts/bench_sequence.py [--chatbots 20000 --creates 200 --rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import time
from typing import Any

from bench_http import cpu_seconds  # scripts/ is first on sys.path
from own_store import report, run_on_own_store

from pollybot_leads.accounts.repository import AccountRepository
from pollybot_leads.indexes import ensure_all_indexes
from pollybot_leads.leads.repository import LeadRepository
from pollybot_leads.store.client import Mongo

DATABASE = "bench_sequence"


async def creates(repo: LeadRepository, bot: str, ws: str, n: int, concurrency: int) -> None:
    left = list(range(n))

    async def client() -> None:
        while left:
            i = left.pop()
            fields = {"name": f"Person {i}", "email": f"p{i}@example.com", "metadata": {}}
            await repo.create(chatbot_id=bot, workspace_id=ws, fields=fields)

    await asyncio.gather(*(client() for _ in range(concurrency)))


async def run(uri: str, store_pid: int, args: argparse.Namespace) -> dict[str, Any]:
    forms: dict[str, Mongo] = {}
    for name, scans in (("update_then_read", True), ("find_and_modify", False)):
        mongo = Mongo(uri, DATABASE)
        await mongo.connect()
        mongo.quirks = dataclasses.replace(mongo.quirks, find_and_modify_scans=scans)
        forms[name] = mongo
    first = next(iter(forms.values()))
    assert first.quirks.server.startswith("secantusdb"), "needs the embedded SecantusDB"
    await ensure_all_indexes(first)
    await first.db["event_sequences"].insert_many(
        [{"_id": f"cb_other{i:011d}", "last": 1} for i in range(args.chatbots)]
    )
    accounts = AccountRepository(first)
    ws = (await accounts.create_workspace(name="sequence"))["id"]
    bot = (await accounts.create_chatbot(workspace_id=ws, name="sequence"))["id"]
    repos = {name: LeadRepository(mongo) for name, mongo in forms.items()}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in repos}
    try:
        for repo in repos.values():  # warm up both
            await creates(repo, bot, ws, 20, args.concurrency)
        for _ in range(args.rounds):
            for name, repo in repos.items():
                store0, began = cpu_seconds([store_pid]), time.perf_counter()
                await creates(repo, bot, ws, args.creates, args.concurrency)
                runs[name].append(
                    {
                        "wall_ms_per_create": (time.perf_counter() - began) * 1000 / args.creates,
                        "store_cpu_ms_per_create": (cpu_seconds([store_pid]) - store0)
                        * 1000
                        / args.creates,
                    }
                )
    finally:
        for mongo in forms.values():
            await mongo.close()

    def median(name: str, field: str) -> float:
        return round(statistics.median(r[field] for r in runs[name]), 2)

    fields = ("wall_ms_per_create", "store_cpu_ms_per_create")
    return {
        "other_chatbots": args.chatbots,
        "creates_per_round": args.creates,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "median": {name: {f: median(name, f) for f in fields} for name in runs},
        "ratio_find_and_modify_vs_update_then_read": {
            f: round(median("find_and_modify", f) / median("update_then_read", f), 2)
            for f in fields
        },
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--chatbots", type=int, default=20000)
    parser.add_argument("--creates", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", default="bench-sequence.json")
    args = parser.parse_args()
    result = run_on_own_store("bench-sequence-", lambda uri, pid: run(uri, pid, args))
    report(result, args.out)


if __name__ == "__main__":
    main()
