"""Webhook delivery: throughput per worker and write-to-delivery latency: `make bench-webhooks`.

Runs `pollybot-leads worker` processes (default settings: 16 deliveries in flight, a
0.25 s poll) against a local receiver (an aiohttp server in this process answering 204),
with events appended as lead writes append them (storage/events.py, one transaction per
write). Two phases:

- **throughput**: ``--events`` events are queued before the workers start; reported is
  deliveries per second from the workers' start to the last delivery, per worker;
- **latency**: ``--latency-events`` events, one at a time at about 20 per second, each
  timed from its commit to its arrival at the receiver (p50, p95, max).

- **crash** (``--crash-events``, 0 to skip): events queued, a worker SIGKILLed after a
  third of them arrived, a new worker started; every event must arrive (0 lost), and
  the ones in flight at the kill may arrive twice, with the same ``webhook-id`` (their
  leases run out first: timeout + 30 s).

- **api** (``--api-seconds``, 0 to skip): a `pollybot-leads serve` (deliveries inside
  it) answers creates and GETs for that long each, first with no endpoint subscribed,
  then with 3 (two answering at once, one never answering: every delivery to it waits
  out the 15 s timeout); requests per second and p95 of each.

In the first two phases every event must arrive exactly once (the receiver counts
``webhook-id``s). Without
MONGODB_URI it starts its own SecantusDB. Prints the figures and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from aiohttp import ClientSession, web

from pollybot_leads.domain import ids
from pollybot_leads.domain.timeutil import utcnow
from pollybot_leads.storage.accounts import AccountRepository
from pollybot_leads.storage.client import Mongo
from pollybot_leads.storage.embedded import EmbeddedStore, free_port
from pollybot_leads.storage.events import LEAD_CREATED, EventLog
from pollybot_leads.storage.indexes import ensure_indexes
from pollybot_leads.storage.webhooks import WebhookRepository
from pollybot_leads.webhooks.payload import EVENT_TYPES

WORKER = (sys.executable, "-m", "pollybot_leads", "worker")


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.arrivals: dict[str, float] = {}
        self.counts: Counter[str] = Counter()

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        msg_id = request.headers["webhook-id"]
        self.arrivals.setdefault(msg_id, time.perf_counter())
        self.counts[msg_id] += 1
        return web.Response(status=204)

    async def start(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        return runner


def lead(chatbot: dict) -> dict:
    now = utcnow()
    return {
        "id": ids.new_id(ids.LEAD),
        "chatbotId": chatbot["id"],
        "workspaceId": chatbot["workspaceId"],
        "name": "Bench Lead",
        "email": "bench@example.com",
        "phone": None,
        "source": "bench",
        "status": "new",
        "metadata": {"utm_source": "bench"},
        "statusHistory": [{"status": "new", "changedAt": now}],
        "createdAt": now,
        "updatedAt": now,
    }


async def append(mongo: Mongo, log: EventLog, chatbot: dict, n: int) -> list[dict]:
    events = [(LEAD_CREATED, {"lead": lead(chatbot)}) for _ in range(n)]
    return await mongo.transaction(
        lambda s: log.append(s, chatbot["id"], chatbot["workspaceId"], events, utcnow())
    )


async def start_workers(count: int, uri: str, database: str) -> list[asyncio.subprocess.Process]:
    env = {
        **os.environ,
        "MONGODB_URI": uri,
        "MONGODB_DATABASE": database,
        "WEBHOOK_ALLOW_PRIVATE": "1",
        "WEBHOOK_ALLOW_HTTP": "1",
        "LOG_LEVEL": "WARNING",
    }
    procs = [
        await asyncio.create_subprocess_exec(*WORKER, env=env, stdout=asyncio.subprocess.PIPE)
        for _ in range(count)
    ]
    for proc in procs:
        await asyncio.wait_for(proc.stdout.readline(), 60)  # "Delivering webhooks"
    return procs


async def wait_for(receiver: Receiver, ids_: list[str], timeout: float) -> None:
    end = time.perf_counter() + timeout
    while not all(i in receiver.arrivals for i in ids_):
        if time.perf_counter() > end:
            missing = sum(i not in receiver.arrivals for i in ids_)
            raise SystemExit(f"{missing} of {len(ids_)} events not delivered in {timeout} s")
        await asyncio.sleep(0.005)


async def crash_phase(mongo, log, chatbot, receiver, args, uri, database) -> dict[str, int]:
    queued: list[str] = []
    for start in range(0, args.crash_events, 100):
        docs = await append(mongo, log, chatbot, min(100, args.crash_events - start))
        queued += [d["_id"] for d in docs]
    [first] = await start_workers(1, uri, database)
    third = len(queued) // 3
    while sum(i in receiver.arrivals for i in queued) < third:
        await asyncio.sleep(0.01)
    first.kill()  # SIGKILL: deliveries in flight keep their leases
    await first.wait()
    at_kill = sum(i in receiver.arrivals for i in queued)
    [second] = await start_workers(1, uri, database)
    try:
        await wait_for(receiver, queued, timeout=300)
        await asyncio.sleep(1.0)
    finally:
        second.terminate()
        await second.wait()
    lost = sum(i not in receiver.arrivals for i in queued)
    twice = sum(receiver.counts[i] - 1 for i in queued)
    print(
        f"crash: {len(queued)} events, worker killed after {at_kill} arrived: {lost} lost, "
        f"{twice} delivered twice (same webhook-id)"
    )
    return {"events": len(queued), "arrived_at_kill": at_kill, "lost": lost, "twice": twice}


async def api_phase(mongo: Mongo, seconds: float, uri: str, database: str) -> dict[str, dict]:
    """API throughput without and with 3 subscribed endpoints (one hanging)."""
    accounts = AccountRepository(mongo)
    ws = await accounts.create_workspace(name="API bench")
    bot = await accounts.create_chatbot(workspace_id=ws["id"], name="api")
    key = await accounts.create_key(
        workspace_id=ws["id"], rate_limit_capacity=10**9, rate_limit_refill=10**9
    )
    headers = {"Authorization": f"Bearer {key.secret}"}
    port = free_port()
    env = {
        **os.environ,
        "MONGODB_URI": uri,
        "MONGODB_DATABASE": database,
        "PORT": str(port),
        "WEBHOOK_ALLOW_PRIVATE": "1",
        "WEBHOOK_ALLOW_HTTP": "1",
        "LOG_LEVEL": "ERROR",
    }
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pollybot_leads", "serve", env=env, stdout=asyncio.subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    leads = f"{base}/api/v1/chatbots/{bot['id']}/leads"
    hang = asyncio.Event()

    async def hanging(request: web.Request) -> web.Response:
        await request.read()
        await hang.wait()
        return web.Response(status=204)

    fast, slow = Receiver(), Receiver()
    runners = [await fast.start()]
    app = web.Application()
    app.router.add_post("/hook", hanging)
    slow_runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await slow_runner.setup()
    await web.TCPSite(slow_runner, "127.0.0.1", slow.port).start()
    runners.append(slow_runner)
    results: dict[str, dict] = {}
    try:
        async with ClientSession() as http:
            for _ in range(600):
                try:
                    async with http.get(f"{base}/healthz") as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    pass
                await asyncio.sleep(0.1)
            async with http.post(
                leads, json={"name": "Seed", "email": "s@example.com"}, headers=headers
            ) as resp:
                lead_id = (await resp.json())["data"]["id"]

            async def load(op: str) -> dict:
                times: list[float] = []
                end = time.perf_counter() + seconds

                async def one() -> None:
                    while time.perf_counter() < end:
                        t = time.perf_counter()
                        if op == "create":
                            body = {"name": "Bench", "email": "b@example.com"}
                            async with http.post(leads, json=body, headers=headers) as r:
                                await r.read()
                        else:
                            async with http.get(f"{leads}/{lead_id}", headers=headers) as r:
                                await r.read()
                        times.append(time.perf_counter() - t)

                await asyncio.gather(*(one() for _ in range(16)))
                return {
                    "per_s": round(len(times) / seconds, 1),
                    "p95_ms": round(pct(times, 0.95) * 1000, 1),
                }

            repo = WebhookRepository(mongo)
            for label in ("0 endpoints", "3 endpoints, 1 hanging"):
                if label.startswith("3"):
                    fast_url = f"http://127.0.0.1:{fast.port}/hook"
                    for url in (fast_url, fast_url, f"http://127.0.0.1:{slow.port}/hook"):
                        await repo.create(
                            workspace_id=ws["id"],
                            url=url,
                            events=list(EVENT_TYPES),
                            chatbot_ids=[],
                            description=None,
                        )
                results[label] = {op: await load(op) for op in ("create", "get")}
                print(
                    f"api, {label}: "
                    + ", ".join(
                        f"{op} {r['per_s']}/s (p95 {r['p95_ms']} ms)"
                        for op, r in results[label].items()
                    )
                )
    finally:
        hang.set()
        server.terminate()
        await server.wait()
        for runner in runners:
            await runner.cleanup()
    return results


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--events", type=int, default=2000, help="events for the throughput")
    parser.add_argument("--latency-events", type=int, default=200)
    parser.add_argument("--crash-events", type=int, default=600)
    parser.add_argument("--api-seconds", type=float, default=5.0)
    parser.add_argument("--out", default="bench-webhooks.json")
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="pollybot-bench-")
    store = None
    uri = os.environ.get("MONGODB_URI")
    if not uri:
        store = EmbeddedStore(Path(tmp.name), free_port())
        store.start()
        uri = store.uri
    database = f"pollybot_bench_{random.randrange(16**6):06x}"
    mongo = Mongo(uri, database)
    receiver = Receiver()
    runner = await receiver.start()
    procs: list[asyncio.subprocess.Process] = []
    try:
        await mongo.connect()
        await ensure_indexes(mongo)
        accounts = AccountRepository(mongo)
        ws = await accounts.create_workspace(name="Webhook bench")
        chatbot = await accounts.create_chatbot(workspace_id=ws["id"], name="bench")
        await WebhookRepository(mongo).create(
            workspace_id=ws["id"],
            url=f"http://127.0.0.1:{receiver.port}/hook",
            events=[LEAD_CREATED],
            chatbot_ids=[],
            description="bench",
        )
        log = EventLog(mongo.db)

        queued: list[str] = []
        for start in range(0, args.events, 100):
            docs = await append(mongo, log, chatbot, min(100, args.events - start))
            queued += [d["_id"] for d in docs]
        began = time.perf_counter()
        procs = await start_workers(args.workers, uri, database)
        ready = time.perf_counter()
        await wait_for(receiver, queued, timeout=600)
        last = max(receiver.arrivals[i] for i in queued)
        throughput = len(queued) / (last - ready)
        print(
            f"throughput: {len(queued)} deliveries in {last - ready:.2f} s with "
            f"{args.workers} worker(s): {throughput:.0f}/s ({throughput / args.workers:.0f}/s "
            f"per worker; workers took {ready - began:.1f} s to start)"
        )

        latencies = []
        for _ in range(args.latency_events):
            [doc] = await append(mongo, log, chatbot, 1)
            committed = time.perf_counter()
            await wait_for(receiver, [doc["_id"]], timeout=60)
            latencies.append((receiver.arrivals[doc["_id"]] - committed) * 1000)
            await asyncio.sleep(random.uniform(0.03, 0.07))  # about 20 writes a second
        p50, p95 = pct(latencies, 0.5), pct(latencies, 0.95)
        print(
            f"latency (commit -> receiver), {len(latencies)} events: p50 {p50:.0f} ms, "
            f"p95 {p95:.0f} ms, max {max(latencies):.0f} ms (poll 0.25 s)"
        )
        await asyncio.sleep(1.0)  # late duplicates would show now
        duplicates = sum(c - 1 for c in receiver.counts.values())
        print(f"duplicates: {duplicates}")

        crash: dict[str, int] = {}
        if args.crash_events:
            for proc in procs:
                proc.terminate()
                await proc.wait()
            crash = await crash_phase(mongo, log, chatbot, receiver, args, uri, database)
            procs = []
        api: dict[str, dict] = {}
        if args.api_seconds:
            api = await api_phase(mongo, args.api_seconds, uri, database)
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in procs:
            await proc.wait()
        await runner.cleanup()
        await mongo.client.drop_database(database)
        await mongo.close()
        if store is not None:
            store.stop()
        tmp.cleanup()

    report = {
        "workers": args.workers,
        "store": "MONGODB_URI" if os.environ.get("MONGODB_URI") else "embedded SecantusDB",
        "throughput": {
            "deliveries": len(queued),
            "per_s": round(throughput, 1),
            "per_s_per_worker": round(throughput / args.workers, 1),
        },
        "latency_ms": {
            "events": len(latencies),
            "p50": round(p50, 1),
            "p95": round(p95, 1),
            "max": round(max(latencies), 1),
            "mean": round(statistics.fmean(latencies), 1),
        },
        "duplicates": duplicates,
        "crash": crash,
        "api": api,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
