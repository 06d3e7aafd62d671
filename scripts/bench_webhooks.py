"""Webhook delivery: throughput per worker and write-to-delivery latency: `make bench-webhooks`.

Runs `pollybot-leads worker` processes (default settings: 16 deliveries in flight, a
0.25 s poll) against a local receiver (an aiohttp server in this process answering 204),
with events appended as lead writes append them (leads/event_log.py, one transaction per
write). Phases (each skipped with 0):

- **throughput** (``--events``): events queued before the workers start; reported is
  deliveries per second from the workers' start to the last delivery, per worker;
- **latency** (``--latency-events``): events one at a time at about 20 per second, each
  timed from its commit to its arrival at the receiver (p50, p95, max); a worker in
  another process learns of them by polling;
- **crash** (``--crash-events``): events queued, a worker SIGKILLed after a third of
  them arrived, a new worker started; every event must arrive (0 lost), and the ones in
  flight at the kill may arrive twice, with the same ``webhook-id`` (their leases run
  out first: timeout + 30 s);
- **serve latency** (``--serve-latency-events``): creates through a `pollybot-leads
  serve` delivering in the background (one endpoint), one at a time at about 20 per
  second, each from its 201 to its arrival (the write wakes the server's own dispatcher);
- **api** (``--api-seconds`` each, ``--api-rounds`` rounds): creates and GETs per second
  (16 clients) against a `serve` delivering in the background, with no endpoint
  subscribed and with 3 (two answering at once, one never answering: every delivery to
  it waits out the 15 s timeout), alternating, each on a fresh database and server;
  with 3, also the deliveries per second that reached the two answering endpoints
  during the load, and how long after the load the last event reached them (the
  backlog drained, the server idle); every round printed, and the medians side by
  side. ``--api-baseline DIR`` measures
  another checkout's server (say, main's) the same way in every round, interleaved,
  so that a change is compared under the same machine load.

In the first two phases every event must arrive exactly once (the receiver counts
``webhook-id``s). Without MONGODB_URI it starts its own SecantusDB. Prints the figures
and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, web
from pymongo.errors import AutoReconnect

from pollybot_leads import ids
from pollybot_leads.accounts.repository import AccountRepository
from pollybot_leads.indexes import ensure_all_indexes
from pollybot_leads.leads.event_log import LEAD_CREATED, EventLog
from pollybot_leads.store.client import Mongo
from pollybot_leads.store.embedded import EmbeddedStore, free_port
from pollybot_leads.timeutil import utcnow
from pollybot_leads.webhooks.payload import EVENT_TYPES
from pollybot_leads.webhooks.repository import WebhookRepository

WORKER = (sys.executable, "-m", "pollybot_leads", "worker")
DRAIN_TIMEOUT_SECONDS = 600.0


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


class Hanging:
    """A receiver that never answers (until the end): every delivery waits out the timeout."""

    def __init__(self) -> None:
        self.port = free_port()
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        await self.release.wait()
        return web.Response(status=204)

    async def start(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        return runner


@contextlib.asynccontextmanager
async def serving(uri: str, database: str, code: str | None = None) -> AsyncIterator[str]:
    """`pollybot-leads serve` (deliveries inside it) on a free port, from the checkout
    ``code`` (default: this one); yields its base URL."""
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
    if code:
        env["PYTHONPATH"] = code
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pollybot_leads", "serve", env=env, stdout=asyncio.subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
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
        yield base
    finally:
        server.terminate()
        await server.wait()


async def api_tenant(mongo: Mongo) -> tuple[dict, dict]:
    """A workspace and chatbot, and the key's Authorization header."""
    accounts = AccountRepository(mongo)
    ws = await accounts.create_workspace(name="API bench")
    bot = await accounts.create_chatbot(workspace_id=ws["id"], name="api")
    key = await accounts.create_key(
        workspace_id=ws["id"], rate_limit_capacity=10**9, rate_limit_refill=10**9
    )
    return bot, {"Authorization": f"Bearer {key.secret}"}


async def subscribe(mongo: Mongo, bot: dict, urls: list[str]) -> None:
    for url in urls:
        await WebhookRepository(mongo).create(
            workspace_id=bot["workspaceId"],
            url=url,
            events=list(EVENT_TYPES),
            chatbot_ids=[],
            description=None,
        )


async def api_load(base: str, bot: dict, headers: dict, seconds: float) -> dict[str, dict]:
    """Creates, then GETs of one lead, each for ``seconds`` with 16 clients."""
    leads = f"{base}/api/v1/chatbots/{bot['id']}/leads"
    async with ClientSession() as http:
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

        return {op: await load(op) for op in ("create", "get")}


async def api_phase(uri: str, seconds: float, rounds: int, baseline: str | None) -> dict[str, Any]:
    """API throughput without and with 3 subscribed endpoints (two answering at once,
    one hanging), each measurement on a fresh database and server, alternating; with
    ``baseline`` (another checkout) its server is measured the same way in each round."""
    fast, slow = Receiver(), Hanging()
    runners = [await fast.start(), await slow.start()]
    fast_url = f"http://127.0.0.1:{fast.port}/hook"
    urls = [fast_url, fast_url, f"http://127.0.0.1:{slow.port}/hook"]
    codes = {"": None} | ({"baseline, ": baseline} if baseline else {})
    labels = {0: "0 endpoints", 3: "3 endpoints, 1 hanging"}
    runs: dict[str, list[dict]] = {
        prefix + label: [] for prefix in codes for label in labels.values()
    }
    try:
        for round_ in range(rounds):
            for prefix, code in codes.items():
                for endpoints, label in labels.items():
                    result = await api_once(uri, urls[:endpoints], seconds, code, fast)
                    runs[prefix + label].append(result)
                    print(
                        f"api round {round_ + 1}, {prefix}{label}: "
                        + ", ".join(
                            f"{op} {r['per_s']}/s"
                            + (f" (p95 {r['p95_ms']} ms)" if "p95_ms" in r else "")
                            + (f", backlog drained in {r['drain_s']} s" if "drain_s" in r else "")
                            for op, r in result.items()
                        ),
                        flush=True,
                    )
    finally:
        slow.release.set()
        for runner in runners:
            await runner.cleanup()
        await drop_databases(uri)
    medians = {
        label: {
            op: statistics.median(r[op]["per_s"] for r in results)
            for op in ("create", "get", "delivered")
        }
        | {"drain_s": statistics.median(r["delivered"]["drain_s"] for r in results)}
        for label, results in runs.items()
    }
    for prefix in codes:
        base, loaded = medians[prefix + labels[0]], medians[prefix + labels[3]]
        print(
            f"api medians of {rounds}, {prefix or 'this checkout, '}with 3: "
            f"{loaded['delivered']:.0f} deliveries/s reached the answering endpoints during "
            f"the load; the rest {loaded['drain_s']:.1f} s after it"
        )
        for op in ("create", "get"):
            print(
                f"api medians of {rounds}, {prefix or 'this checkout, '}{op}: "
                f"{base[op]:.0f}/s with 0 endpoints, {loaded[op]:.0f}/s with 3 "
                f"(x{loaded[op] / base[op]:.2f})"
            )
    return {"rounds": runs, "medians_per_s": medians}


async def api_once(
    uri: str, urls: list[str], seconds: float, code: str | None, fast: Receiver
) -> dict:
    """One measurement; with endpoints, also the deliveries that reached the answering
    ones (``fast``) during the load, per second, and how long after the load the last
    of the events reached them (the server still running, unloaded).

    Its database is left for :func:`drop_databases`: SecantusDB spends 13-17 s dropping
    one, and seconds after that stall every request, so dropping it here would slow the
    next measurement (measured: GETs at 142/s instead of 2,700/s, with or without
    endpoints)."""
    database = f"pollybot_bench_api_{random.randrange(16**6):06x}"
    LEFT_DATABASES.append(database)
    mongo = Mongo(uri, database)
    try:
        await mongo.connect()
        await ensure_all_indexes(mongo)
        bot, headers = await api_tenant(mongo)
        await subscribe(mongo, bot, urls)
        answering = urls.count(f"http://127.0.0.1:{fast.port}/hook")
        async with serving(uri, database, code) as base:
            before = sum(fast.counts.values())
            result = await api_load(base, bot, headers, seconds)
            ended = time.perf_counter()
            during = sum(fast.counts.values()) - before
            # Every event (the creates', the seed's) to each answering endpoint.
            expected = answering * await mongo.db["events"].count_documents({})
            end = ended + DRAIN_TIMEOUT_SECONDS
            while sum(fast.counts.values()) - before < expected:
                if time.perf_counter() > end:
                    raise SystemExit(f"backlog not delivered within {DRAIN_TIMEOUT_SECONDS} s")
                await asyncio.sleep(0.05)
            drained = time.perf_counter() - ended if expected else 0.0
            result["delivered"] = {
                "per_s": round(during / (2 * seconds), 1),
                "drain_s": round(drained, 1),
            }
            return result
    finally:
        await mongo.close()


LEFT_DATABASES: list[str] = []


async def drop_databases(uri: str) -> None:
    """Drop the databases the api phase left, once every measurement is done, on a
    MONGODB_URI server (the bench's own SecantusDB goes with its directory)."""
    if not os.environ.get("MONGODB_URI"):
        LEFT_DATABASES.clear()
        return
    mongo = Mongo(uri, "admin")
    try:
        await mongo.connect()
        while LEFT_DATABASES:
            await mongo.client.drop_database(LEFT_DATABASES.pop())
    finally:
        await mongo.close()


async def serve_latency_phase(uri: str, count: int) -> dict[str, float]:
    """From a create's 201 to its delivery, with `serve` delivering (one endpoint),
    creates one at a time at about 20 a second."""
    receiver = Receiver()
    runner = await receiver.start()
    database = f"pollybot_bench_lat_{random.randrange(16**6):06x}"
    mongo = Mongo(uri, database)
    latencies: list[float] = []
    try:
        await mongo.connect()
        await ensure_all_indexes(mongo)
        bot, headers = await api_tenant(mongo)
        await subscribe(mongo, bot, [f"http://127.0.0.1:{receiver.port}/hook"])
        async with serving(uri, database) as base, ClientSession() as http:
            leads = f"{base}/api/v1/chatbots/{bot['id']}/leads"
            for _ in range(count):
                body = {"name": "Latency", "email": "l@example.com"}
                async with http.post(leads, json=body, headers=headers) as resp:
                    await resp.read()
                    assert resp.status == 201, resp.status
                committed = time.perf_counter()
                before = set(receiver.arrivals)
                end = committed + 60
                while len(receiver.arrivals) == len(before):
                    if time.perf_counter() > end:
                        raise SystemExit("a create was not delivered within 60 s")
                    await asyncio.sleep(0.001)
                [new] = set(receiver.arrivals) - before
                latencies.append((receiver.arrivals[new] - committed) * 1000)
                await asyncio.sleep(random.uniform(0.03, 0.07))
    finally:
        await runner.cleanup()
        await mongo.client.drop_database(database)
        await mongo.close()
    p50, p95 = pct(latencies, 0.5), pct(latencies, 0.95)
    print(
        f"latency in serve (201 -> receiver), {len(latencies)} creates: p50 {p50:.0f} ms, "
        f"p95 {p95:.0f} ms, max {max(latencies):.0f} ms"
    )
    return {"events": len(latencies), "p50": round(p50, 1), "p95": round(p95, 1)}


async def throughput_phase(mongo, log, chatbot, receiver, args, uri) -> tuple[dict, list]:
    """``--events`` queued first; deliveries per second from the workers' start."""
    queued: list[str] = []
    for start in range(0, args.events, 100):
        docs = await append(mongo, log, chatbot, min(100, args.events - start))
        queued += [d["_id"] for d in docs]
    began = time.perf_counter()
    procs = await start_workers(args.workers, uri, mongo.db.name)
    ready = time.perf_counter()
    await wait_for(receiver, queued, timeout=600)
    last = max(receiver.arrivals[i] for i in queued)
    per_s = len(queued) / (last - ready)
    print(
        f"throughput: {len(queued)} deliveries in {last - ready:.2f} s with "
        f"{args.workers} worker(s): {per_s:.0f}/s ({per_s / args.workers:.0f}/s "
        f"per worker; workers took {ready - began:.1f} s to start)"
    )
    result = {
        "deliveries": len(queued),
        "per_s": round(per_s, 1),
        "per_s_per_worker": round(per_s / args.workers, 1),
    }
    return result, procs


async def worker_latency_phase(mongo, log, chatbot, receiver, args) -> dict[str, float]:
    """Events one at a time (about 20 a second), each from its commit to its arrival."""
    latencies = []
    for _ in range(args.latency_events):
        [doc] = await append(mongo, log, chatbot, 1)
        committed = time.perf_counter()
        await wait_for(receiver, [doc["_id"]], timeout=60)
        latencies.append((receiver.arrivals[doc["_id"]] - committed) * 1000)
        await asyncio.sleep(random.uniform(0.03, 0.07))  # about 20 writes a second
    p50, p95 = pct(latencies, 0.5), pct(latencies, 0.95)
    print(
        f"latency with a worker process (commit -> receiver), {len(latencies)} events: "
        f"p50 {p50:.0f} ms, p95 {p95:.0f} ms, max {max(latencies):.0f} ms"
    )
    return {
        "events": len(latencies),
        "p50": round(p50, 1),
        "p95": round(p95, 1),
        "max": round(max(latencies), 1),
        "mean": round(statistics.fmean(latencies), 1),
    }


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--events", type=int, default=2000, help="events for the throughput")
    parser.add_argument("--latency-events", type=int, default=200)
    parser.add_argument("--crash-events", type=int, default=600)
    parser.add_argument("--serve-latency-events", type=int, default=100)
    parser.add_argument("--api-seconds", type=float, default=5.0)
    parser.add_argument("--api-rounds", type=int, default=3)
    parser.add_argument(
        "--api-baseline",
        metavar="DIR",
        help="another checkout whose server the api phase measures too, in each round",
    )
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
        await ensure_all_indexes(mongo)
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
        log = EventLog(mongo.db, mongo.quirks)

        throughput: dict[str, float] = {}
        latency: dict[str, float] = {}
        if args.events:
            throughput, procs = await throughput_phase(mongo, log, chatbot, receiver, args, uri)
        elif args.latency_events:
            procs = await start_workers(args.workers, uri, database)
        if args.latency_events:
            latency = await worker_latency_phase(mongo, log, chatbot, receiver, args)
        await asyncio.sleep(1.0)  # late duplicates would show now
        duplicates = sum(c - 1 for c in receiver.counts.values())
        print(f"duplicates: {duplicates}")
        for proc in procs:  # the later phases run without them
            proc.terminate()
            await proc.wait()
        procs = []

        crash: dict[str, int] = {}
        if args.crash_events:
            crash = await crash_phase(mongo, log, chatbot, receiver, args, uri, database)
        serve_latency: dict[str, float] = {}
        if args.serve_latency_events:
            serve_latency = await serve_latency_phase(uri, args.serve_latency_events)
        api: dict[str, Any] = {}
        if args.api_seconds:
            api = await api_phase(uri, args.api_seconds, args.api_rounds, args.api_baseline)
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in procs:
            await proc.wait()
        await runner.cleanup()
        try:
            await mongo.client.drop_database(database)
        except AutoReconnect:  # idle through the later phases, its connection was closed
            await mongo.client.drop_database(database)
        await mongo.close()
        if store is not None:
            store.stop()
        tmp.cleanup()

    report = {
        "workers": args.workers,
        "store": "MONGODB_URI" if os.environ.get("MONGODB_URI") else "embedded SecantusDB",
        "throughput": throughput,
        "latency_ms": latency,
        "duplicates": duplicates,
        "crash": crash,
        "serve_latency_ms": serve_latency,
        "api": api,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
