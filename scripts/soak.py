"""Soak: minutes of mixed load on the API, with a ledger of what it acknowledged: `make soak`.

Self-contained like bench_http.py: its own SecantusDB (EmbeddedStore, run as the embedded
default runs it; with MONGODB_URI set, a database of its own there, dropped at the end) and
its own redis-server; 2 workspaces x 2 chatbots with ``--seed-leads`` leads each and one
API key per workspace whose bucket never runs dry; ``python -m pollybot_leads serve``
delivering webhooks to ``--webhooks`` endpoints per chatbot (a receiver in this process).
One load-generator subprocess runs ``--clients`` asyncio clients for ``--seconds``: 55 %
GET a lead, 20 % lists (page 1, status, search, cursor page 2, metadata filter), 15 %
creates (plain, Idempotency-Key, upsert by email), 7 % PUT (half with If-Match), 3 %
DELETE. Each client keeps a ledger of the writes the API acknowledged on its own leads;
after the load it is checked against the store (lost creates, lost updates, resurrected
deletes), and each chatbot's list total against a count of its leads.

Per ``--window``: served/s (answers that are not 5xx, 429 or socket errors), 2xx/s,
statuses, shares of 503 and 429, latency per operation (refused answers apart), and,
sampled from /proc every 2 s, RSS, CPU and threads of the API and the store and the
store's established connections. ``--sigstop-at S`` freezes the store for
``--sigstop-for`` s; ``--overload-clients N --overload-at S --overload-for D`` adds clients
for a while; both report goodput around the event and the time back to 90 % of before.
Prints a table and pass/fail checks, writes all (per-second too) to ``--out``, and the API's
whole log beside it (``<out>.api.log``); exits 0.

``--floor`` runs the same load against scripts/bench_floor_server.py --soak instead of the
API: the least store work for each request of the mix, on the same store, database,
indexes and client options (scripts/floor_soak.py), and no Redis or webhooks. A lower
bound on the store work, to put beside the API's run (the ratio of the two says what the
API costs beyond it). Its writes move no lead counters, so the ledger is checked and the
list totals are not; it refuses the webhook, SIGSTOP and overload options, which measure
what the floor does not have.

    python scripts/soak.py --clients 32 --seconds 300 --out soak-32.json
    python scripts/soak.py --clients 8 --seconds 40 --window 10 --sigstop-at 15
    python scripts/soak.py --floor --clients 64 --seconds 300 --out soak-floor-64.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import bench_http
from aiohttp import web
from bench_http import (
    FLOOR_SCRIPT,
    Server,
    fake_fields,
    process_tree,
    start_redis,
    stop_server,
    wait_until_listening,
)
from pymongo import MongoClient

from pollybot_leads.accounts.repository import AccountRepository
from pollybot_leads.indexes import ensure_all_indexes
from pollybot_leads.leads.documents import build_lead_document
from pollybot_leads.leads.repository import LeadRepository
from pollybot_leads.leads.rules import STATUSES
from pollybot_leads.store.client import Mongo
from pollybot_leads.store.embedded import EmbeddedStore, free_port, stop_process

ROOT = Path(__file__).resolve().parent.parent
TICKS, PAGE = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
WORKSPACES, CHATBOTS_PER_WORKSPACE = 2, 2
OPS = ("get", "list", "create", "put", "delete")
MIX = ((0.55, "get"), (0.75, "lists"), (0.90, "create"), (0.97, "put"), (1.0, "delete"))
SAMPLE_SECONDS = 2.0
CLIENT_TIMEOUT = 10.0
SPREAD = timedelta(days=90)  # seeded leads were created over the last 90 days
SEARCH = ("smith", "mary", "garc", "kim", "ahmed", "nguy", "doe", "anna", "jones")
AROUND = (10, 20)  # seconds before and after an event reported per second
BACK = 0.9  # "recovered": goodput back to 90 % of the median before
UNKNOWN = ("timeout", "error")  # with 5xx: a write that may or may not have happened
SERVERS = ("api", "floor")  # the process under load, by the name it is reported under
FLOOR_LABEL = "FLOOR: a lower bound on the store work (scripts/floor_soak.py), not the API"


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes and /proc


def _die_with_parent() -> None:  # in the child between fork and exec
    with contextlib.suppress(OSError):  # PR_SET_PDEATHSIG: killed outright, leave nothing
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    os.setpgrp()  # Ctrl-C reaches only us; we stop the children in order


def tree_stats(pid: int) -> dict[str, Any]:
    """RSS (MB), threads and utime+stime (+ reaped children's) of ``pid`` and descendants."""
    rss = threads = ticks = 0
    state = "gone"
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as fh:
                f = fh.read().rsplit(")", 1)[1].split()  # f[0] is field 3 (state)
        except OSError:
            continue
        state = f[0] if p == pid else state
        ticks += sum(int(v) for v in f[11:15])
        threads += int(f[17])
        rss += int(f[21]) * PAGE
    rss_mb = round(rss / 2**20, 1)
    return {"rss_mb": rss_mb, "threads": threads, "cpu_s": ticks / TICKS, "state": state}


def established(port: int) -> int:
    """TCP connections in state ESTABLISHED whose local end is ``port`` (server side)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            for line in fh.readlines()[1:]:
                parts = line.split()
                count += parts[3] == "01" and int(parts[1].rsplit(":", 1)[1], 16) == port
    return count


@dataclass
class Procs:
    """Everything this run started, stopped in order by ``close`` whatever happens."""

    store: EmbeddedStore | None = None
    redis: subprocess.Popen[bytes] | None = None
    api: Server | None = None
    loadgen_pid: int | None = None
    stopped: list[int] = field(default_factory=list)  # pids under SIGSTOP
    external: tuple[str, str] | None = None  # (uri, database) to drop

    def cont(self) -> None:
        for pid in self.stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.stopped = []

    def close(self) -> None:
        self.cont()
        if self.loadgen_pid:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(self.loadgen_pid, signal.SIGKILL)
                os.waitpid(self.loadgen_pid, 0)
        if self.api:
            stop_server(self.api)
        if self.redis:
            stop_process(self.redis, 5)
        if self.store:
            self.store.stop()
        elif self.external:
            bench_http.drop_database(*self.external)


def server_env(uri: str, database: str) -> dict[str, str]:
    """Ours, less any setting of the service, and the store to use."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PB_", "MONGODB_", "REDIS_", "RATELIMIT_", "WEBHOOK"))
        and k not in ("HOST", "PORT", "LOG_LEVEL", "CURSOR_SECRET", "WORKERS")
    }
    return env | {"MONGODB_URI": uri, "MONGODB_DATABASE": database, "LOG_LEVEL": "WARNING"}


def start_api(workdir: Path, uri: str, database: str, redis_port: int) -> Server:
    port = free_port()
    env = server_env(uri, database)
    env |= {"REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "PB_DATA_DIR": str(workdir / "var")}
    env |= {"CURSOR_SECRET": secrets.token_urlsafe(32)}
    # The receiver is http://127.0.0.1: a plain-HTTP, loopback target.
    env |= {"WEBHOOK_ALLOW_HTTP": "true", "WEBHOOK_ALLOW_PRIVATE": "true"}
    argv = [sys.executable, "-m", "pollybot_leads", "serve", "--host", "127.0.0.1"]
    return _start_server("api", argv, port, env, workdir)


def _start_server(
    name: str, argv: list[str], port: int, env: dict[str, str], workdir: Path
) -> Server:
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [*argv, "--port", str(port)], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
        )  # fmt: skip
    return Server(name, port, process, log_path, {}, env)


def start_floor(workdir: Path, uri: str, database: str) -> Server:
    """The floor's soak routes, on the API's settings (config/default.toml, then env)."""
    port, env = free_port(), server_env(uri, database)
    argv = [sys.executable, str(FLOOR_SCRIPT), "--soak", "--host", "127.0.0.1"]
    return _start_server("floor", argv, port, env, workdir)


async def seed(uri: str, database: str, per_chatbot: int) -> list[dict[str, Any]]:
    """Workspaces, chatbots, keys and leads; one entry per chatbot."""
    mongo = Mongo(uri, database)
    chatbots = []
    try:
        await mongo.connect()
        await ensure_all_indexes(mongo)
        accounts, repo = AccountRepository(mongo), LeadRepository(mongo)
        rng, now = random.Random(20240115), datetime.now(UTC)
        for w in range(WORKSPACES):
            ws = (await accounts.create_workspace(name=f"Soak {w}"))["id"]
            key = await accounts.create_key(  # a bucket that never runs dry, as in bench_http
                workspace_id=ws, name="soak", rate_limit_capacity=10**9, rate_limit_refill=10**9
            )
            for c in range(CHATBOTS_PER_WORKSPACE):
                bot = (await accounts.create_chatbot(workspace_id=ws, name=f"Soak {c}"))["id"]
                docs = [
                    build_lead_document(bot, ws, fake_fields(rng, i), now - SPREAD * rng.random())
                    for i in range(per_chatbot)
                ]
                if docs:
                    await repo.insert_many(docs=docs)
                await repo.recount(chatbot_id=bot)  # a bulk load bypasses the counters
                ids = [doc["_id"] for doc in docs]
                chatbots.append({"id": bot, "workspace": ws, "key": key.secret, "lead_ids": ids})
    finally:
        await mongo.close()
    return chatbots


class Receiver:
    """The webhook endpoints: answers 204 at once, counts deliveries per second."""

    def __init__(self) -> None:
        self.port, self.t0 = free_port(), 0.0
        self.seen: set[str] = set()
        self.duplicates = 0
        self.per_second: Counter[int] = Counter()

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        msg = request.headers.get("webhook-id", "")
        self.duplicates += msg in self.seen
        self.seen.add(msg)
        self.per_second[int(time.monotonic() - self.t0)] += 1
        return web.Response(status=204)

    async def start(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/hook/{name}", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        return runner


async def prepare(base: str, chatbots: list[dict[str, Any]], hook_port: int, hooks: int) -> None:
    """Register the webhook endpoints, and check one GET and one list per chatbot."""
    async with aiohttp.ClientSession() as session:
        for bot in chatbots:
            auth = {"Authorization": f"Bearer {bot['key']}"}
            for n in range(hooks):
                url = f"http://127.0.0.1:{hook_port}/hook/{bot['id']}-{n}"
                body = {"url": url, "chatbotIds": [bot["id"]], "description": "soak"}
                async with session.post(f"{base}/api/v1/webhooks", json=body, headers=auth) as r:
                    if r.status != 201:
                        raise SystemExit(f"webhook not created: {r.status} {await r.text()}")
            leads = f"{base}/api/v1/chatbots/{bot['id']}/leads"
            for url in [f"{leads}?limit=1"] + [f"{leads}/{i}" for i in bot["lead_ids"][:1]]:
                async with session.get(url, headers=auth) as r:
                    if r.status != 200:
                        raise SystemExit(f"GET {url}: {r.status} {await r.text()}")


# ---------------------------------------------------------------- the load generator


class Load:
    """All clients, in one process (``--loadgen``): a bucket per second, on stdout."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec, self.base = spec, spec["base"]
        self.t0 = time.monotonic() + 0.5  # the parent starts sampling meanwhile
        self.buckets: dict[int, dict[str, Any]] = {}
        self.ledger: dict[str, dict[str, Any]] = {}
        self.anomalies: list[str] = []
        self.bodies: dict[str, list[str]] = defaultdict(list)  # "op status" -> samples
        self.unknown_creates = 0
        self.chatbots = [
            {**b, "path": f"/api/v1/chatbots/{b['id']}/leads", "recent": deque(maxlen=2000),
             "headers": {"Authorization": f"Bearer {b['key']}"}}
            for b in spec["chatbots"]
        ]  # fmt: skip

    def anomaly(self, text: str) -> None:
        if len(self.anomalies) < 200:
            self.anomalies.append(text)

    def bucket(self, at: float) -> dict[str, Any]:
        if (bucket := self.buckets.get(second := max(0, int(at - self.t0)))) is None:
            bucket = self.buckets[second] = {"n": {}, "lat": {}, "ref": {}, "net": 0}
        return bucket

    def record(self, op: str, status: str, started: float, ended: float) -> None:
        bucket = self.bucket(ended)
        counts = bucket["n"].setdefault(op, {})
        counts[status] = counts.get(status, 0) + 1
        if status != "error":  # a timeout counts at its 10 s; a refused connection nowhere
            kind = "ref" if status in ("503", "429") else "lat"
            bucket[kind].setdefault(op, []).append(round((ended - started) * 1000, 1))

    async def call(
        self, bot: dict[str, Any], op: str, method: str, path: str,
        body: Any = None, headers: dict[str, str] | None = None, want: bool = False,
    ) -> tuple[str, Any, str | None]:  # fmt: skip
        started, data, etag = time.monotonic(), None, None
        try:
            async with self.session.request(
                method, self.base + bot["path"] + path, json=body, headers=headers or bot["headers"]
            ) as resp:
                raw = await resp.read()
                status, etag = str(resp.status), resp.headers.get("ETag")
                after = resp.headers.get("Retry-After", "")
        except TimeoutError:
            status, raw, after = "timeout", b"", ""
        except aiohttp.ClientError as exc:
            status, raw, after = "error", repr(exc).encode(), ""
        self.record(op, status, started, time.monotonic())
        if status in ("503", "429") and after.isdigit() and self.spec["honour_retry_after"]:
            await asyncio.sleep(min(int(after), 10))  # as the contract's client does
        if status in ("200", "201"):
            data = json.loads(raw)["data"] if want else None
        elif len(samples := self.bodies[f"{op} {method} {status}"]) < 2:
            samples.append(raw[:300].decode(errors="replace"))
        return status, data, etag

    async def emit(self) -> None:
        second = 0
        try:
            while True:
                await asyncio.sleep(max(0.0, self.t0 + second + 1.05 - time.monotonic()))
                self.emit_one(second)
                second += 1
        except asyncio.CancelledError:
            for s in range(second, max(self.buckets, default=-1) + 1):
                self.emit_one(s)

    def emit_one(self, second: int) -> None:
        bucket = self.buckets.pop(second, {"n": {}, "lat": {}, "ref": {}, "net": 0})
        print(json.dumps({"bucket": {"s": second, **bucket}}), flush=True)

    async def run(self) -> None:
        print(json.dumps({"start": self.t0}), flush=True)
        spec, t0 = self.spec, self.t0
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as self.session:
            end = t0 + spec["seconds"]
            runs = [Client(self, n).run(t0, end) for n in range(spec["clients"])]
            if extra := spec["overload"]:  # [at, for, extra clients]
                at, until = t0 + extra[0], t0 + extra[0] + extra[1]
                runs += [Client(self, spec["clients"] + n).run(at, until) for n in range(extra[2])]
            emitter = asyncio.create_task(self.emit())
            await asyncio.gather(*runs)
            emitter.cancel()
            await emitter
        result = {"ledger": list(self.ledger.values()), "anomalies": self.anomalies}
        result |= {"bodies": self.bodies, "unknown_creates": self.unknown_creates}
        Path(spec["result"]).write_text(json.dumps(result))
        print(json.dumps({"done": True}), flush=True)


class Client:
    """One client: one request at a time; PUTs and DELETEs only on the leads it created."""

    def __init__(self, load: Load, number: int) -> None:
        self.load, self.number = load, number
        self.rng = random.Random(load.spec["seed"] * 100_003 + number)
        self.bot = load.chatbots[number % len(load.chatbots)]
        self.owned: list[str] = []
        self.etags: dict[str, str | None] = {}
        self.seq = 0

    async def run(self, start: float, stop: float) -> None:
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        while time.monotonic() < stop:
            r = self.rng.random()
            op = next(name for edge, name in MIX if r < edge)
            try:
                await getattr(self, op)()
            except Exception as exc:  # a bug here must not end the soak
                self.load.anomaly(f"client {self.number}: {exc!r}")

    def own(self, lead: str, etag: str | None) -> None:
        self.owned.append(lead)
        self.etags[lead] = etag
        self.bot["recent"].append(lead)

    def disown(self, lead: str) -> None:
        self.owned.remove(lead)
        self.etags.pop(lead, None)

    async def read(self, lead: str) -> str:
        status, _, etag = await self.load.call(self.bot, "get", "GET", f"/{lead}")
        if lead in self.etags:
            if status == "200":
                self.etags[lead] = etag
            elif status == "404":
                self.load.anomaly(f"GET of acknowledged lead {lead}: 404")
                self.disown(lead)
        return status

    async def get(self) -> None:
        pool = self.bot["recent"] if self.rng.random() < 0.15 else self.bot["lead_ids"]
        await self.read(self.rng.choice(pool or self.bot["lead_ids"]))  # mostly ones that exist

    async def lists(self) -> None:
        kind, bot, call = self.rng.randrange(5), self.bot, self.load.call
        if kind in (0, 3):
            _, data, _ = await call(bot, "list", "GET", "?limit=20", want=kind == 3)
            if kind == 3 and data and (cursor := data["pagination"].get("nextCursor")):
                await call(bot, "list", "GET", f"?limit=20&cursor={cursor}")
        else:
            query = {1: "status=new", 2: f"search={self.rng.choice(SEARCH)}"}
            await call(bot, "list", "GET", "?" + query.get(kind, "metadata.utm_source=google"))

    def acknowledged(self, data: dict[str, Any], seq: int, etag: str | None) -> None:
        if (rec := self.load.ledger.get(data["id"])) is None:
            rec = {"id": data["id"], "chatbot": self.bot["id"], "seq": seq, "unknown": []}
            rec |= {"name": data["name"], "email": data["email"]}
            self.load.ledger[data["id"]] = rec | {"deleted": False, "deleteUnknown": False}
            self.own(data["id"], etag)
            self.load.bucket(time.monotonic())["net"] += 1
        elif data["id"] in self.etags:
            rec["seq"], rec["unknown"], self.etags[data["id"]] = seq, [], etag
        else:
            self.load.anomaly(f"upsert answered lead {data['id']}, not this client's")

    async def create(self) -> None:
        self.seq += 1
        kind, seq, target = self.rng.randrange(3), self.seq, None
        headers, path = None, "?upsert=email" if kind == 2 else ""
        if kind == 2 and self.owned and self.rng.random() < 0.5:  # upsert onto our lead
            target = self.load.ledger[self.rng.choice(self.owned)]
            body = {"name": target["name"], "email": target["email"], "metadata": {"soakSeq": seq}}
        else:
            tag = f"{self.number}.{seq}.{self.rng.randrange(10**6)}"
            first = self.rng.choice(("Ann", "Bob", "Chloé", "Dev", "Eve"))
            meta = {"utm_source": self.rng.choice(("google", "soak")), "soakSeq": seq}
            body = {"name": f"{first} Soak {tag}", "email": f"soak.{tag}@example.com"}
            body |= {"source": "soak", "metadata": meta}
            if kind == 1:
                headers = {**self.bot["headers"], "Idempotency-Key": uuid.uuid4().hex}
        status, data, etag = await self.load.call(
            self.bot, "create", "POST", path, body, headers, want=True
        )
        if status in ("200", "201"):
            if target is not None and data["id"] != target["id"]:
                self.load.anomaly(f"upsert of {target['id']}'s email answered {data['id']}")
            self.acknowledged(data, seq, etag)
        elif status.startswith("5") or status in UNKNOWN:
            if target is not None:
                target["unknown"].append(seq)
                self.etags[target["id"]] = None
            else:
                self.load.unknown_creates += 1

    async def put(self) -> None:
        if not self.owned:
            return await self.create()
        lead, headers = self.rng.choice(self.owned), None
        if self.rng.random() < 0.5:
            if self.etags.get(lead) is None and await self.read(lead) != "200":
                return None
            headers = {**self.bot["headers"], "If-Match": self.etags[lead] or ""}
        self.seq += 1
        body = {"status": self.rng.choice(STATUSES), "metadata": {"soakSeq": self.seq}}
        status, _, etag = await self.load.call(self.bot, "put", "PUT", f"/{lead}", body, headers)
        rec = self.load.ledger[lead]
        if status == "200":
            rec["seq"], rec["unknown"], self.etags[lead] = self.seq, [], etag
        elif status == "412":
            self.etags[lead] = None
        elif status == "404":
            self.load.anomaly(f"PUT of acknowledged lead {lead}: 404")
            self.disown(lead)
        elif status.startswith("5") or status in UNKNOWN:
            rec["unknown"].append(self.seq)
            self.etags[lead] = None
        return None

    async def delete(self) -> None:
        if not self.owned:
            return await self.create()
        lead = self.rng.choice(self.owned)
        status, _, _ = await self.load.call(self.bot, "delete", "DELETE", f"/{lead}?confirm=true")
        if status == "200":
            self.load.ledger[lead]["deleted"] = True
            self.load.bucket(time.monotonic())["net"] -= 1
        elif status == "404":
            self.load.anomaly(f"DELETE of acknowledged lead {lead}: 404")
        elif status.startswith("5") or status in UNKNOWN:
            self.load.ledger[lead]["deleteUnknown"] = True
        else:
            return None  # 429 and the like: nothing happened, still ours
        self.disown(lead)
        return None


# ---------------------------------------------------------------- figures


def pct(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    v = sorted(values)
    at = {q: v[min(len(v) - 1, int(q / 100 * len(v)))] for q in (50, 95, 99)}
    return {"n": len(v), "p50": at[50], "p95": at[95], "p99": at[99], "max": v[-1]}


def served(status: str) -> bool:
    return status.isdigit() and int(status) < 500 and status != "429"


def summary(buckets: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    statuses: Counter[str] = Counter()
    by_op: dict[str, Counter[str]] = {op: Counter() for op in OPS}
    latency, refused, refused_by_op = defaultdict(list), [], defaultdict(list)
    for b in buckets:
        for op, counts in b["n"].items():
            statuses.update(counts)
            by_op[op].update(counts)
        for op, values in b["lat"].items():
            latency[op] += values
        for op, values in b["ref"].items():
            refused += values
            refused_by_op[op] += values
    answers = sum(statuses.values()) or 1
    return {
        "seconds": seconds,
        "requests": sum(statuses.values()),
        "served_per_s": sum(n for s, n in statuses.items() if served(s)) / seconds,
        "ok_per_s": sum(n for s, n in statuses.items() if s.startswith("2")) / seconds,
        "pct_503": 100 * statuses["503"] / answers,
        "pct_429": 100 * statuses["429"] / answers,
        "socket_errors": statuses["timeout"] + statuses["error"],
        "leads_added": sum(b.get("net", 0) for b in buckets),  # acknowledged, less deleted
        "statuses": dict(sorted(statuses.items())),
        "by_op": {op: dict(sorted(c.items())) for op, c in by_op.items()},
        "latency_ms": {op: pct(latency[op]) for op in OPS},
        "refused_latency_ms": pct(refused),
        "refused_latency_ms_by_op": {op: pct(refused_by_op[op]) for op in OPS if refused_by_op[op]},
    }


def at_or_before(samples: list[dict[str, Any]], t: float) -> dict[str, Any] | None:
    return next((s for s in reversed(samples) if s["t"] <= t + 0.5), None)


def resources(samples: list[dict[str, Any]], start: float, end: float) -> dict[str, Any]:
    """Per process: RSS and threads at the window's end, CPU % of one core over it."""
    a, b = at_or_before(samples, start), at_or_before(samples, end)
    out: dict[str, Any] = {}
    if a is None or b is None or b["t"] <= a["t"]:
        return out
    for name in (*SERVERS, "store", "loadgen"):
        if name in b:
            cpu = 100 * (b[name]["cpu_s"] - a[name]["cpu_s"]) / (b["t"] - a["t"])
            out[name] = {k: b[name][k] for k in ("rss_mb", "threads", "state")}
            out[name]["cpu_pct"] = round(cpu, 1)
    conns = [
        s["store_conns"] for s in samples if start < s["t"] <= end + 0.5 and "store_conns" in s
    ]
    if conns:
        out["store_conns_max"] = max(conns)
    return out


def recovery(per_second: list[dict[str, Any]], reference: float, after: float) -> float | None:
    """Seconds from ``after`` to the end of the first 1 s bucket back at >= 90 % of reference."""
    for k in range(int(after), len(per_second)):
        if per_second[k]["served_per_s"] >= BACK * reference:
            return round(k + 1 - after, 2)
    return None


def stalls(per_second: list[dict[str, Any]]) -> list[list[int]]:
    """Runs of >= 2 s under 10 % of the median second's served/s: something stuck."""
    values = [b["served_per_s"] for b in per_second]
    floor, runs, start = 0.1 * statistics.median(values or [0]), [], None
    for k, v in enumerate([*values, floor]):
        if v < floor and start is None:
            start = k
        elif v >= floor and start is not None:
            runs += [[start, k]] if k - start >= 2 else []
            start = None
    return runs


def event_report(per_second: list[dict[str, Any]], start: float, end: float) -> dict[str, Any]:
    s0 = int(start)
    before = [b["served_per_s"] for b in per_second[max(0, s0 - AROUND[0]) : s0]]
    reference = statistics.median(before) if before else 0.0
    lo, hi = max(0, s0 - AROUND[0]), min(len(per_second), int(end) + AROUND[1] + 1)
    return {
        "start_s": round(start, 2),
        "end_s": round(end, 2),
        "before_median_served_per_s": reference,
        "recovery_s": recovery(per_second, reference, end),
        "from_s": lo,  # then one figure per second:
        **{k: [b[k] for b in per_second[lo:hi]] for k in ("served_per_s", "ok_per_s", "pct_503")},
    }


# ---------------------------------------------------------------- verification


async def api_totals(base: str, chatbots: list[dict[str, Any]]) -> dict[str, Any]:
    totals: dict[str, Any] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)) as s:
        for bot in chatbots:
            url = f"{base}/api/v1/chatbots/{bot['id']}/leads?limit=1"
            for _ in range(5):
                async with s.get(url, headers={"Authorization": f"Bearer {bot['key']}"}) as r:
                    if r.status == 200:
                        totals[bot["id"]] = (await r.json())["data"]["pagination"]["total"]
                        break
                    totals[bot["id"]] = f"HTTP {r.status}"
                await asyncio.sleep(1)
    return totals


def set_profiling(uri: str, database: str, slow_ms: int) -> None:
    """The store records the commands slower than ``slow_ms`` in ``system.profile``."""
    client: MongoClient[dict[str, Any]] = MongoClient(uri, serverSelectionTimeoutMS=10_000)
    try:
        client[database].command({"profile": 1, "slowms": slow_ms})
    finally:
        client.close()


def read_profile(uri: str, database: str, t0: float) -> list[dict[str, Any]]:
    """The slow commands the store recorded, oldest first: when (seconds into the load,
    by this machine's clock), how long, which collection and command (its shape)."""
    client: MongoClient[dict[str, Any]] = MongoClient(
        uri, serverSelectionTimeoutMS=10_000, socketTimeoutMS=120_000, tz_aware=True
    )
    try:
        docs = list(client[database]["system.profile"].find({}, sort=[("ts", 1)], limit=5000))
    finally:
        client.close()
    offset = time.time() - time.monotonic()  # the profile's times are wall-clock
    out = []
    for doc in docs:
        ts = doc.get("ts")
        at = ts.timestamp() - offset - t0 if isinstance(ts, datetime) else None
        command = doc.get("command") or {}
        out.append(
            {
                "at_s": None if at is None else round(at, 2),
                "ms": doc.get("millis"),
                "op": doc.get("op"),
                "ns": doc.get("ns"),
                "command": sorted(k for k in command if not k.startswith("$"))[:6],
                "shape": repr(
                    {k: command[k] for k in ("filter", "pipeline", "q", "sort") if k in command}
                )[:300],
                "keys_examined": doc.get("keysExamined"),
                "docs_examined": doc.get("docsExamined"),
            }
        )
    return out


def verify(
    uri: str,
    database: str,
    ledger: list[dict[str, Any]],
    chatbots: list[str],
    totals: dict[str, Any] | None,
) -> dict[str, Any]:
    """The ledger against the store; ``totals`` (None: not checked) against a count."""
    client: MongoClient[dict[str, Any]] = MongoClient(
        uri, serverSelectionTimeoutMS=10_000, socketTimeoutMS=120_000
    )
    try:
        leads = client[database]["leads"]
        query = {"chatbotId": {"$in": chatbots}}
        stored = {d["_id"]: d for d in leads.find(query, {"name": 1, "email": 1, "metadata": 1})}
        counts = {bot: leads.count_documents({"chatbotId": bot}) for bot in chatbots}
    finally:
        client.close()
    lost_creates, lost_updates, resurrected, altered = [], [], [], []
    for rec in ledger:
        doc = stored.get(rec["id"])
        if rec["deleted"]:
            if doc is not None:
                resurrected.append(rec["id"])
        elif doc is None:
            if not rec["deleteUnknown"]:
                lost_creates.append(rec["id"])
        else:
            found = (doc.get("metadata") or {}).get("soakSeq")
            if found != rec["seq"] and found not in rec["unknown"]:
                lost_updates.append({**rec, "stored": found})
            if (doc["name"], doc["email"]) != (rec["name"], rec["email"]):
                altered.append(rec["id"])
    mismatches = {
        bot: {"api_total": totals[bot], "store_count": counts[bot]}
        for bot in totals or {}
        if totals[bot] != counts[bot]
    }
    verdict = {
        "leads_acknowledged": len(ledger),
        "deleted_acknowledged": sum(r["deleted"] for r in ledger),
        "lost_creates": lost_creates,
        "lost_updates": lost_updates,
        "resurrected_deletes": resurrected,
        "altered_name_or_email": altered,
        "total_mismatches": mismatches,
        "totals": {
            bot: {"api_total": "not checked" if totals is None else totals[bot], "store_count": n}
            for bot, n in counts.items()
        },
    }
    if totals is None:
        verdict["totals_checked"] = False  # the floor's writes move no lead counters
    verdict["clean"] = not (lost_creates or lost_updates or resurrected or altered or mismatches)
    return verdict


async def wait_idle(pids: list[int], quiet: float = 2.0, limit: float = 30.0) -> float:
    """Until API and store use < 5 % of a core for ``quiet`` s (webhook polls never stop)."""
    started = time.monotonic()
    last, calm = sum(tree_stats(p)["cpu_s"] for p in pids), 0.0
    while calm < quiet and time.monotonic() - started < limit:
        await asyncio.sleep(0.5)
        now = sum(tree_stats(p)["cpu_s"] for p in pids)
        calm, last = (calm + 0.5 if now - last < 0.025 else 0.0), now
    return time.monotonic() - started


# ---------------------------------------------------------------- the run


async def sample_loop(
    t0: float, pids: dict[str, int], store: EmbeddedStore | None, out: list
) -> None:
    k = 0
    while True:
        await asyncio.sleep(max(0.0, t0 + k * SAMPLE_SECONDS - time.monotonic()))
        row: dict[str, Any] = {"t": round(time.monotonic() - t0, 3)}
        row.update({name: tree_stats(pid) for name, pid in pids.items()})
        if store is not None:
            process = store.process  # its watchdog may have started another one
            if process is not None:
                row["store"] = tree_stats(process.pid)
            row["store_conns"] = established(store.port)
        out.append(row)
        k = int((time.monotonic() - t0) / SAMPLE_SECONDS) + 1


async def sigstop(procs: Procs, pid: int, t0: float, at: float, hold: float, ev: dict) -> None:
    try:
        await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
        procs.stopped = process_tree(pid)
        for p in procs.stopped:
            os.kill(p, signal.SIGSTOP)
        ev["stopped_at"] = time.monotonic() - t0
        await asyncio.sleep(max(0.0, t0 + at + hold - time.monotonic()))
    finally:
        if procs.stopped:
            procs.cont()
            ev["continued_at"] = time.monotonic() - t0


def window_bounds(seconds: int, window: int) -> list[tuple[int, int]]:
    return [(a, min(a + window, seconds)) for a in range(0, seconds, window)]


def window_row(buckets: list, samples: list, a: int, b: int) -> dict[str, Any]:
    row = {"window": f"{a}-{b}s", "start_s": a, "end_s": b, **summary(buckets[a:b], b - a)}
    return row | {"resources": resources(samples, a, b)}


async def soak(args: argparse.Namespace, workdir: Path, procs: Procs) -> dict[str, Any]:
    uri = os.environ.get("MONGODB_URI")
    database = f"soak_{secrets.token_hex(4)}"
    store_started: float | None = None
    slow_ops: list[dict[str, Any]] | None = None
    if uri:
        procs.external = (uri, database)
    else:
        procs.store = EmbeddedStore(workdir / "secantusdb", free_port(), cache_size="4G")
        procs.store.start()
        procs.store.watch()  # as `serve` watches the store it starts
        store_started = time.monotonic()
        uri = procs.store.uri
    redis_port = 0
    if not args.floor:  # the floor has no rate limit
        procs.redis, redis_port = start_redis(workdir)
    log(f"seeding {args.seed_leads} leads in each of 4 chatbots ...")
    chatbots = await seed(uri, database, args.seed_leads)
    receiver = Receiver()
    runner = await receiver.start()
    loadgen = None
    try:
        if args.floor:
            log(FLOOR_LABEL)
            api = procs.api = start_floor(workdir, uri, database)
        else:
            api = procs.api = start_api(workdir, uri, database, redis_port)
        await asyncio.to_thread(wait_until_listening, api)
        base = f"http://127.0.0.1:{api.port}"
        await prepare(base, chatbots, receiver.port, args.webhooks)
        if args.profile_slow_ms is not None:
            await asyncio.to_thread(set_profiling, uri, database, args.profile_slow_ms)
        overload = None
        if args.overload_clients and args.overload_clients > args.clients:
            extra = args.overload_clients - args.clients
            overload = [args.overload_at, args.overload_for, extra]
        spec = {k: getattr(args, k) for k in ("clients", "seed", "seconds", "honour_retry_after")}
        spec |= {"base": base, "chatbots": chatbots, "overload": overload}
        spec["result"] = str(workdir / "loadgen-result.json")
        (workdir / "loadgen-spec.json").write_text(json.dumps(spec))
        loadgen = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--loadgen", str(workdir / "loadgen-spec.json"),
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=(workdir / "loadgen.log").open("wb"), limit=2**26, preexec_fn=_die_with_parent,
        )  # fmt: skip
        procs.loadgen_pid = loadgen.pid
        assert loadgen.stdout is not None
        first = await loadgen.stdout.readline()
        if not first:
            raise SystemExit(f"load generator failed:\n{(workdir / 'loadgen.log').read_text()}")
        t0 = receiver.t0 = json.loads(first)["start"]
        store_pid = procs.store.process.pid if procs.store and procs.store.process else None
        pids = {api.name: api.process.pid, "loadgen": loadgen.pid}
        samples: list[dict[str, Any]] = []
        tasks = [asyncio.create_task(sample_loop(t0, pids, procs.store, samples))]
        stop_event: dict[str, float] = {}
        if args.sigstop_at is not None and store_pid:
            stop = sigstop(procs, store_pid, t0, args.sigstop_at, args.sigstop_for, stop_event)
            tasks.append(asyncio.create_task(stop))
        buckets: list[dict[str, Any]] = []
        bounds = window_bounds(args.seconds, args.window)
        age = "" if store_started is None else f" (store started {t0 - store_started:.0f} s before)"
        log(f"load: {args.clients} clients for {args.seconds} s{age}; windows as they end:")
        log(header(api.name))
        while line := await loadgen.stdout.readline():
            msg = json.loads(line)
            if "done" in msg:
                break
            buckets.append(msg["bucket"])
            for a, b in bounds:
                if len(buckets) == b:
                    log(render_row(window_row(buckets, samples, a, b)))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if await loadgen.wait() != 0:
            raise SystemExit(f"load generator failed:\n{(workdir / 'loadgen.log').read_text()}")
        result = json.loads((workdir / "loadgen-result.json").read_text())
        store_now = procs.store.process if procs.store else None
        idle = await wait_idle([api.process.pid, *([store_now.pid] if store_now else [])])
        await asyncio.sleep(2)
        log(f"load done, idle after {idle:.1f} s; verifying {len(result['ledger'])} leads ...")
        totals = None if args.floor else await api_totals(base, chatbots)
        bots = [bot["id"] for bot in chatbots]
        ledger = await asyncio.to_thread(verify, uri, database, result["ledger"], bots, totals)
        if args.profile_slow_ms is not None:
            slow_ops = await asyncio.to_thread(read_profile, uri, database, t0)
    finally:
        if loadgen is not None and loadgen.returncode is None:
            loadgen.kill()
            await loadgen.wait()
        await runner.cleanup()
    windows = [window_row(buckets, samples, a, b) for a, b in bounds]
    leads = len(chatbots) * args.seed_leads
    for w in windows:  # the chatbots grow: filtered lists count more leads as they do
        leads = w["leads_at_end"] = leads + w["leads_added"]
    per_second = [summary([b], 1.0) for b in buckets]
    timed = per_second[: args.seconds]
    api_log = api.log_path.read_text(errors="replace")
    if args.out:  # the whole log beside the report: what the API said during a stall
        Path(args.out).with_suffix(".api.log").write_text(api_log)
    report: dict[str, Any] = {
        "benchmark": "soak",
        "setup": {
            **{k: v for k, v in vars(args).items() if k not in ("out", "loadgen")},
            "server": FLOOR_LABEL if args.floor else "the API (python -m pollybot_leads serve)",
            "store": "MONGODB_URI" if procs.external else "embedded SecantusDB (cache 4G)",
            "chatbots": len(chatbots),
            "rate_limit": "none (floor)" if args.floor else "Redis, key capacity 10**9",
            # the store's own timers (its checkpoints) run from its start, not the load's
            "store_started_before_load_s": None
            if store_started is None
            else round(t0 - store_started, 1),
        },
        "machine": {"nproc": os.cpu_count(), "load_average_after": os.getloadavg()},
        "overall": summary(buckets[: args.seconds], args.seconds),
        "overall_resources": resources(samples, 0, args.seconds),
        # the requests in flight when the load stopped, answered after its end
        "after_end": summary(buckets[args.seconds :], max(1, len(buckets) - args.seconds)),
        "windows": windows,
        "stalls": stalls(timed),  # [from, to) seconds
        # restarts of the store by its watchdog (pollybot_leads/store/embedded.py)
        "store_restarts": procs.store.restarts if procs.store else 0,
        "ledger": ledger,
        "unknown_creates": result["unknown_creates"],
        "anomalies": result["anomalies"],
        "non_2xx_samples": result["bodies"],
        "webhooks": {
            "deliveries": sum(receiver.per_second.values()),
            "distinct_events": len(receiver.seen),
            "duplicates": receiver.duplicates,
            "per_second": [receiver.per_second.get(s, 0) for s in range(len(buckets))],
        },
        "samples": samples,
        "per_second": per_second,  # index: second from the load's start
        "api_log": {
            k: api_log.count(k) for k in (" WARNING ", " ERROR ", "Traceback")
        },  # or floor's
        "api_log_tail": api_log[-5000:],
        **({"slow_ops": slow_ops} if slow_ops is not None else {}),
        "notes": NOTES,
    }
    if stop_event:
        report["sigstop"] = {
            **stop_event,
            **event_report(timed, stop_event["stopped_at"], stop_event["continued_at"]),
        }
    if overload:
        at, hold, extra = overload
        ev = event_report(timed, at, at + hold)
        during = summary(buckets[int(at) : int(at + hold)], max(1, int(hold)))
        report["overload"] = {**ev, "extra_clients": extra, "during": during}
    report["checks"] = checks(report)
    return report


NOTES = {
    "served": "answers that are not 5xx, 429, client timeouts (10 s) or socket errors; "
    "404 on a lead another client deleted and 412 on If-Match are served",
    "latency_ms": "per operation, every answer except 503/429 (refused_latency_ms) and "
    "socket errors; a client timeout counts at its elapsed time",
    "buckets": "requests fall in the second they completed in, from the load's start",
    "resources": "RSS and threads at the window's end, CPU % of one core over it (/proc, "
    "utime+stime of the process tree), store_conns_max: established TCP connections to "
    "the store's port (/proc/net/tcp), the largest sample in the window",
    "ledger": "acknowledged creates, updates (metadata.soakSeq) and deletes, checked in "
    "the store; an update answered 5xx or not at all may or may not be there",
}


def checks(report: dict[str, Any]) -> list[dict[str, Any]]:
    windows, out = report["windows"], []

    def check(name: str, ok: bool, measured: Any) -> None:
        out.append({"check": name, "pass": bool(ok), "measured": measured})

    first = windows[0]["served_per_s"] if windows else 0
    low = min((w["served_per_s"] for w in windows), default=0)
    check(
        "every window >= 80 % of the first window's served/s",
        low >= 0.8 * first,
        f"lowest {low:.0f}/s, first {first:.0f}/s",
    )
    share = report["overall"]["pct_503"]
    check("<= 1 % of answers 503 overall", share <= 1, f"{share:.2f} %")
    errors = {
        status: n
        for status, n in report["overall"]["statuses"].items()
        if status.isdigit() and int(status) >= 500 and status != "503"
    }
    check("no 5xx but 503 (a 500 is a bug)", not errors, errors or "none")
    p99s = [(w["latency_ms"]["get"] or {}).get("p99") for w in windows]
    worst = max((p for p in p99s if p is not None), default=None)
    check("GET p99 <= 250 ms in every window", worst is not None and worst <= 250, worst)
    a = at_or_before(report["samples"], windows[max(0, len(windows) - 3)]["start_s"])
    b = at_or_before(report["samples"], windows[-1]["end_s"])
    for name in (*SERVERS, "store"):
        if a and b and name in a and a[name]["rss_mb"]:
            growth = 100 * (b[name]["rss_mb"] / a[name]["rss_mb"] - 1)
            check(
                f"{name} RSS grows <= 10 % over the last three windows",
                growth <= 10,
                f"{a[name]['rss_mb']:.0f} -> {b[name]['rss_mb']:.0f} MB ({growth:+.1f} %)",
            )
    unchecked = report["ledger"].get("totals_checked") is False
    check(
        "ledger clean",
        report["ledger"]["clean"],
        "list totals not checked" if unchecked else "see ledger",
    )
    return out


def header(server: str) -> str:
    return (
        f"{'window':>9} {'srv/s':>6} {'2xx/s':>6} {'%503':>5} {'%429':>5} {'err':>4} "
        f"{'GET99':>6} {'list99':>6} {'cre50/99':>11} {'put99':>6} | {server + ' MB':>8} "
        f"{'CPU%':>5} {'thr':>3} | {'store MB':>8} {'CPU%':>5} {'thr':>3} {'conns':>5}"
    )


def render_row(w: dict[str, Any]) -> str:
    def ms(op: str, q: str) -> str:
        value = (w["latency_ms"][op] or {}).get(q)
        return "-" if value is None else f"{value:.0f}"

    res = w["resources"]
    api = next((res[name] for name in SERVERS if name in res), {})
    store = res.get("store", {})
    return (
        f"{w['window']:>9} {w['served_per_s']:6.0f} {w['ok_per_s']:6.0f} {w['pct_503']:5.1f} "
        f"{w['pct_429']:5.1f} {w['socket_errors']:4d} {ms('get', 'p99'):>6} "
        f"{ms('list', 'p99'):>6} {ms('create', 'p50') + '/' + ms('create', 'p99'):>11} "
        f"{ms('put', 'p99'):>6} | {api.get('rss_mb', '-'):>8} {api.get('cpu_pct', '-'):>5} "
        f"{api.get('threads', '-'):>3} | {store.get('rss_mb', '-'):>8} "
        f"{store.get('cpu_pct', '-'):>5} {store.get('threads', '-'):>3} "
        f"{res.get('store_conns_max', '-'):>5}"
    )


def render(report: dict[str, Any]) -> str:
    s, o = report["setup"], report["overall"]
    server = "floor" if s["floor"] else "api"
    lines = [
        *([f"*** {FLOOR_LABEL} ***"] if s["floor"] else []),
        f"Soak: {s['clients']} clients"
        + (" (each waits Retry-After when refused)" if s.get("honour_retry_after") else "")
        + f", {s['seconds']} s, {s['store']}, {s['webhooks']} webhook "
        f"endpoint(s) per chatbot, {report['machine']['nproc']} CPUs. srv/s: served answers "
        "(not 5xx/429/socket error) per s; latencies in ms (503/429 apart)",
        "",
        header(server),
        *[render_row(w) for w in report["windows"]],
        "",
        "Statuses per window:",
        *[
            f"  {w['window']:>9}: "
            + " ".join(f"{k}={v}" for k, v in w["statuses"].items())
            + f"; leads at the end: {w['leads_at_end']}"
            for w in report["windows"]
        ],
    ]
    ref = o["refused_latency_ms"]
    lines += [
        "",
        f"Overall: {o['requests']} answers, {o['served_per_s']:.0f} served/s, "
        f"{o['ok_per_s']:.0f} 2xx/s, 503 {o['pct_503']:.2f} %, 429 {o['pct_429']:.2f} %, "
        f"socket errors/timeouts {o['socket_errors']}; refused answers p50/p99 "
        + (f"{ref['p50']:.0f}/{ref['p99']:.0f} ms ({ref['n']})" if ref else "- (none)"),
        "Webhooks: none (the floor has none)"
        if s["floor"]
        else f"Webhooks: {report['webhooks']['deliveries']} deliveries received, "
        f"{report['webhooks']['duplicates']} duplicates",
        "CPU over the load, % of one core: "
        + ", ".join(
            f"{k} {v['cpu_pct']:.0f}"
            for k, v in report["overall_resources"].items()
            if isinstance(v, dict)
        ),
        f"{server} log lines: "
        + ", ".join(f"{k.strip()} {n}" for k, n in report["api_log"].items()),
        "Stalls (>= 2 s under 10 % of the median served/s): "
        + (", ".join(f"{a}-{b} s" for a, b in report["stalls"]) or "none"),
        f"Store restarted by its watchdog: {report.get('store_restarts', 0)} time(s)",
    ]
    if (slow := report.get("slow_ops")) is not None:
        by_ns = Counter(f"{op['ns']} {op['op']}" for op in slow)
        lines.append(
            f"Slow store commands (profiler): {len(slow)}; "
            + ", ".join(f"{k} {n}" for k, n in by_ns.most_common(6))
        )
        for op in sorted(slow, key=lambda o: -(o["ms"] or 0))[:8]:
            lines.append(
                f"  {op['at_s']} s: {op['ms']} ms {op['op']} {op['ns']} {op['shape'][:160]}"
            )
    for name in ("sigstop", "overload"):
        if ev := report.get(name):
            series = " ".join(f"{v:.0f}" for v in ev["served_per_s"])
            rec = ev["recovery_s"]
            lines += [
                "",
                f"{name}: {ev['start_s']:.1f} s to {ev['end_s']:.1f} s; median served/s in the "
                f"10 s before {ev['before_median_served_per_s']:.0f}; back to >= 90 % "
                + (f"within {rec:.1f} s of the end" if rec is not None else "NEVER"),
                f"  served/s, second by second from {ev['from_s']} s: {series}",
            ]
            if name == "overload":
                d, r = ev["during"], ev["during"]["refused_latency_ms"]
                lines.append(
                    f"  during: {d['served_per_s']:.0f} served/s, {d['ok_per_s']:.0f} 2xx/s, "
                    f"503 {d['pct_503']:.1f} %, refused p50/p99 "
                    + (f"{r['p50']:.0f}/{r['p99']:.0f} ms" if r else "-")
                    + "; 503 by operation: "
                    + " ".join(f"{op} {d['by_op'][op].get('503', 0)}" for op in OPS)
                )
    v = report["ledger"]
    lines += [
        "",
        f"Ledger: {v['leads_acknowledged']} acknowledged creates ({v['deleted_acknowledged']} "
        f"deleted), {report['unknown_creates']} creates unanswered/5xx: lost creates "
        f"{len(v['lost_creates'])}, lost updates {len(v['lost_updates'])}, resurrected deletes "
        f"{len(v['resurrected_deletes'])}, altered {len(v['altered_name_or_email'])}, total "
        + (
            "mismatches not checked (the floor moves no counters)"
            if v.get("totals_checked") is False
            else f"mismatches {len(v['total_mismatches'])}"
        )
        + f" -> {'clean' if v['clean'] else 'NOT CLEAN'}",
    ]
    if report["anomalies"]:
        lines.append(f"Anomalies ({len(report['anomalies'])}): {report['anomalies'][:5]}")
    lines += ["", "Checks:"]
    for c in report["checks"]:
        lines.append(f"  {'pass' if c['pass'] else 'FAIL'}  {c['check']}: {c['measured']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--out", type=Path, default=Path("soak.json"))
    add("--clients", type=int, default=32)
    add("--seconds", type=int, default=300)
    add("--window", type=int, default=60, help="seconds per reported window")
    add("--seed-leads", type=int, default=500, help="leads seeded per chatbot")
    add("--webhooks", type=int, help="webhook endpoints per chatbot (1; the floor: 0)")
    add("--seed", type=int, default=1, help="random seed of the clients")
    add("--sigstop-at", type=float, help="SIGSTOP the store this many seconds into the load")
    add("--sigstop-for", type=float, default=5.0)
    add("--overload-clients", type=int, help="clients in all during the overload")
    add("--overload-at", type=float)
    add("--overload-for", type=float, default=10.0)
    add("--floor", action="store_true", help="the floor (a lower bound on store work), not the API")
    add("--profile-slow-ms", type=int, help="record the store's commands slower than this")
    add(
        "--honour-retry-after",
        action="store_true",
        help="a client refused (503, 429) waits its Retry-After before its next request, as "
        "the contract's Python client does (default: it sends the next one at once)",
    )
    add("--loadgen", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.loadgen:  # ourselves, as the load-generator subprocess
        asyncio.run(Load(json.loads(Path(args.loadgen).read_text())).run())
        return 0
    if min(args.clients, args.seconds, args.window) < 1 or (args.webhooks or 0) < 0:
        parser.error("clients, seconds and window must be at least 1")
    if args.floor:
        # The floor has no webhooks, and no admission or early refusal whose recovery a
        # stall or an overload would measure: it would bound nothing the API does there.
        if args.webhooks:
            parser.error("--floor has no webhooks: leave out --webhooks (or give 0)")
        if args.sigstop_at is not None or args.overload_clients or args.overload_at is not None:
            parser.error(
                "--floor measures steady store work only: --sigstop-* and --overload-* measure "
                "the API's behaviour under faults, which the floor does not have"
            )
    args.webhooks = (0 if args.floor else 1) if args.webhooks is None else args.webhooks
    if args.sigstop_at is not None and os.environ.get("MONGODB_URI"):
        parser.error("--sigstop-at needs the embedded store (MONGODB_URI is set)")
    if args.overload_clients and args.overload_at is None:
        parser.error("--overload-clients needs --overload-at")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    procs = Procs()
    try:
        with tempfile.TemporaryDirectory(prefix="pb-soak-") as tmp:
            try:
                report = asyncio.run(soak(args, Path(tmp), procs))
            finally:
                procs.close()
    except KeyboardInterrupt:
        log("\ninterrupted: load generator, server, Redis and store stopped")
        return 130
    print(render(report))
    args.out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
