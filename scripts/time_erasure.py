"""What an erasure costs: one person's leads across a workspace's chatbots, erased over
HTTP, against deleting the same number of leads one ``DELETE`` at a time.

Starts its own SecantusDB and the API (in this process, as the tests do), seeds a
workspace with ``--chatbots`` chatbots holding ``--leads`` leads of one email between
them (through the batch route: each with its event and counters), and a chatbot of
another workspace with ``--noise`` leads of other people (an erasure must not read
them). Then erases the email (``POST /api/v1/privacy/erasures``, with ``suppress``),
timing the call and the store's CPU; seeds the same leads again and deletes them one
``DELETE`` at a time for comparison. ``--rounds`` repeats both; medians are printed
and written as JSON.

    python scripts/time_erasure.py [--leads 1000 --chatbots 3 --noise 5000 --rounds 3]
"""

from __future__ import annotations

import argparse
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


def person(email: str) -> dict[str, Any]:
    tag = secrets.token_hex(4)
    return {"name": f"Person {tag}", "email": email, "phone": "+1 415 555 0100"}


async def seed(api: TestClient, key: str, chatbots: list[str], email: str, leads: int) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    per_bot = [leads // len(chatbots) + (i < leads % len(chatbots)) for i in range(len(chatbots))]
    for chatbot, count in zip(chatbots, per_bot, strict=True):
        for start in range(0, count, 100):
            items = [person(email) for _ in range(min(100, count - start))]
            url = f"/api/v1/chatbots/{chatbot}/leads/batch"
            resp = await api.post(url, json={"leads": items}, headers=headers)
            assert resp.status == 200, await resp.text()


async def run(uri: str, store_pid: int, args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings(
        mongodb_uri=uri,
        mongodb_database="timing",
        ratelimit_enabled=False,
        webhooks_deliver=False,
        cursor_secret="timing",
    )
    mongo = Mongo(uri, "timing")
    await mongo.connect()
    await ensure_all_indexes(mongo)
    accounts = AccountRepository(mongo)
    ws = (await accounts.create_workspace(name="t"))["id"]
    chatbots = [
        (await accounts.create_chatbot(workspace_id=ws, name=f"c{i}"))["id"]
        for i in range(args.chatbots)
    ]
    key = (await accounts.create_key(workspace_id=ws, name="t")).secret
    other_ws = (await accounts.create_workspace(name="noise"))["id"]
    noise_bot = (await accounts.create_chatbot(workspace_id=other_ws, name="n"))["id"]
    noise_key = (await accounts.create_key(workspace_id=other_ws, name="n")).secret
    api = TestClient(TestServer(create_app(settings)))
    await api.start_server()
    headers = {"Authorization": f"Bearer {key}"}
    erasures: list[dict[str, float]] = []
    deletes: list[dict[str, float]] = []
    try:
        for n in range(0, args.noise, 100):  # other people's leads, in another workspace
            items = [person(f"noise{n + i}@example.com") for i in range(min(100, args.noise - n))]
            resp = await api.post(
                f"/api/v1/chatbots/{noise_bot}/leads/batch",
                json={"leads": items},
                headers={"Authorization": f"Bearer {noise_key}"},
            )
            assert resp.status == 200, await resp.text()
        for _ in range(args.rounds):
            email = f"erase.{secrets.token_hex(4)}@example.com"
            await seed(api, key, chatbots, email, args.leads)
            cpu0, began = cpu_seconds([store_pid]), time.perf_counter()
            resp = await api.post(
                "/api/v1/privacy/erasures",
                json={"email": email, "suppress": True, "confirm": True},
                headers=headers,
            )
            seconds = time.perf_counter() - began
            body = await resp.json()
            assert resp.status == 200 and body["data"]["erased"] == args.leads, body
            erasures.append({"seconds": seconds, "store_cpu": cpu_seconds([store_pid]) - cpu0})

            email = f"delete.{secrets.token_hex(4)}@example.com"
            await seed(api, key, chatbots, email, args.leads)
            found = mongo.db["leads"].find({"emailFolded": email}, {"chatbotId": 1})
            targets = [(doc["chatbotId"], doc["_id"]) async for doc in found]
            cpu0, began = cpu_seconds([store_pid]), time.perf_counter()
            for chatbot, lead_id in targets:
                resp = await api.delete(
                    f"/api/v1/chatbots/{chatbot}/leads/{lead_id}",
                    params={"confirm": "true"},
                    headers=headers,
                )
                assert resp.status == 200, await resp.text()
            seconds = time.perf_counter() - began
            deletes.append({"seconds": seconds, "store_cpu": cpu_seconds([store_pid]) - cpu0})
    finally:
        await api.close()
        await mongo.close()

    def median(runs: list[dict[str, float]], field: str) -> float:
        return round(statistics.median(run[field] for run in runs), 3)

    return {
        "leads": args.leads,
        "chatbots": args.chatbots,
        "noise_leads": args.noise,
        "rounds": args.rounds,
        "erasure": {
            "seconds_median": median(erasures, "seconds"),
            "store_cpu_seconds_median": median(erasures, "store_cpu"),
            "ms_per_lead": round(median(erasures, "seconds") * 1000 / args.leads, 2),
            "runs": erasures,
        },
        "deletes_one_at_a_time": {
            "seconds_median": median(deletes, "seconds"),
            "store_cpu_seconds_median": median(deletes, "store_cpu"),
            "ms_per_lead": round(median(deletes, "seconds") * 1000 / args.leads, 2),
            "runs": deletes,
        },
        "erasure_time_vs_deletes": round(
            median(erasures, "seconds") / median(deletes, "seconds"), 3
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--leads", type=int, default=1000)
    parser.add_argument("--chatbots", type=int, default=3)
    parser.add_argument("--noise", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="bench-erasure.json")
    args = parser.parse_args()
    result = run_on_own_store("time-erasure-", lambda uri, pid: run(uri, pid, args))
    report(result, args.out)


if __name__ == "__main__":
    main()
