"""The API against its floor over HTTP, side by side: `make bench-http`.

Self-contained: starts its own SecantusDB (unless MONGODB_URI is set: then a database of
its own there, dropped at the end), seeds a workspace, a chatbot holding ``--leads`` leads,
three more chatbots up to ``--total`` leads, and an API key whose bucket never runs dry.
Then two servers run against that same store, each in its own process:

* ``api``   - the real server (``python -m pollybot_leads serve``), in-process rate limit;
* ``floor`` - scripts/bench_floor_server.py: the same store work with nothing around it.

One load generator drives both (wrk when installed, else a Python aiohttp client in a
subprocess): GET a random seeded lead, POST a new lead, GET list page 1 (``?limit=10``).
Each operation runs in rounds that alternate the order (api, floor / floor, api, ...) so
that a noisy machine affects both alike. A round lasts until the requests still in
flight when the load stops have been served (see measure). Per round: successful
requests/s, and the CPU the server process (and any children) and the store process spent
per request, from utime+stime in /proc/<pid>/stat. Medians over rounds, api/floor ratios
and the targets are printed; everything, round by round, goes to ``--out`` as JSON. It
reports and does not gate: the exit status is 0 whether targets are met or not, and
failed requests (non-2xx, socket errors) are counted in the table, in a warning under it
and in the JSON.

``--deployed`` starts the api as it is deployed: the rate limit in Redis (a private
redis-server on a free port; the key's bucket is so large that no request is refused, so
the run pays the limiter's cost without being throttled), one JSON access line per
request at INFO (``LOG_FORMAT=json``, ``LOG_LEVEL=INFO``) and the metrics, which are always
collected, scraped from ``/metrics`` at the end. The Redis server's CPU per request is
measured beside the api's; the floor is unchanged.

    python scripts/bench_http.py --out bench-http.json [--rounds 5 --seconds 5 --leads 2000]
    python scripts/bench_http.py --workers 2 ...   # the api as `serve --workers 2`
    python scripts/bench_http.py --ops get ...     # only some operations
    python scripts/bench_http.py --deployed ...    # Redis limiter, JSON access log, metrics
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import http.client
import json
import os
import platform
import random
import re
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from pollybot_leads.accounts.repository import AccountRepository
from pollybot_leads.indexes import ensure_all_indexes
from pollybot_leads.leads.documents import build_lead_document
from pollybot_leads.leads.repository import LeadRepository
from pollybot_leads.leads.rules import STATUSES
from pollybot_leads.store.client import Mongo
from pollybot_leads.store.embedded import EmbeddedStore, free_port, port_open, stop_process

ROOT = Path(__file__).resolve().parent.parent
FLOOR_SCRIPT = ROOT / "scripts" / "bench_floor_server.py"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
OPS = ("get", "list", "create")  # create last: its new leads must not change get or list
SERVERS = ("api", "floor")
OTHER_CHATBOTS = 3
SEED_BATCH = 1000
SEED_SPREAD = timedelta(days=90)  # seeded leads were created over the last 90 days
RESULT_MARK = "BENCH_HTTP_RESULT "
# A JSON access line at INFO (telemetry/logs.py's JsonFormatter): one per request served.
ACCESS_LINE_MARKS = ('"level": "INFO"', '"logger": "pollybot_leads.access"')
ACCESS_STATUS = re.compile(rb'"status": (\d+)')
LOG_TAIL_CHARS = 3000
DROP_TIMEOUT_MS = 60_000
IDLE_POLL_SECONDS = 0.02
IDLE_QUIET_SECONDS = 0.3
# An external store's CPU is not visible: a server waiting on its backlog looks idle, so
# the quiet stretch that ends a round is longer (it only delays, the end is the last tick).
IDLE_QUIET_EXTERNAL_SECONDS = 1.5
# (operation, metric, aim): the api/floor ratio the API is meant to reach.
TARGETS = (
    ("get", "requests_per_second", ">=", 0.9),
    ("create", "requests_per_second", ">=", 0.8),
    ("get", "server_cpu_us_per_request", "<=", 1.3),
)


# ---------------------------------------------------------------- CPU from /proc


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()  # after "(comm)": comm may hold spaces
    except (FileNotFoundError, ProcessLookupError):
        return None


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants. /proc/<pid>/task/*/children needs
    CONFIG_PROC_CHILDREN, which not every kernel has: this reads the ppid of every process."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat_fields(int(entry))):
            parents.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        tree.append(current := todo.pop())
        todo.extend(parents.get(current, ()))
    return tree


def quiet_seconds(store_pid: int | None) -> float:
    return IDLE_QUIET_SECONDS if store_pid else IDLE_QUIET_EXTERNAL_SECONDS


def cpu_seconds(pids: list[int]) -> float:
    """utime+stime of these processes, plus cutime+cstime: their children already reaped."""
    ticks = 0
    for pid in pids:
        if fields := _stat_fields(pid):
            ticks += sum(int(v) for v in fields[11:15])  # stat fields 14-17
    return ticks / CLOCK_TICKS


def wait_until_idle(pids: list[int], quiet: float, limit: float = 300.0) -> float:
    """Wait until these processes stop using CPU; the monotonic time they last did.

    When the load generator stops, requests it had in flight are still being served (the
    server does not cancel a handler whose client left, and the store finishes its
    queries): that work belongs to this round and must not spill into the next one. An
    idle SecantusDB spends one clock tick every few seconds, so "no tick for ``quiet``
    seconds" is a sharp enough end.
    """
    last, last_change = cpu_seconds(pids), time.monotonic()
    begun = last_change
    while (now := time.monotonic()) - last_change < quiet:
        if now - begun > limit:
            raise SystemExit(f"processes {pids} still busy after {limit:.0f} s")
        time.sleep(IDLE_POLL_SECONDS)
        if (current := cpu_seconds(pids)) != last:
            last, last_change = current, time.monotonic()
    return last_change


def machine_busy_ticks() -> int:
    """CPU ticks the whole machine (all cores) has been busy, from /proc/stat."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already inside user)
    return sum(values[:8]) - values[3] - values[4]


def children_cpu_seconds() -> float:
    """CPU of this process's reaped children: the load generator, once it has exited."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------- seeding

FIRST = ("John", "Mary", "José", "Zoë", "Ahmed", "Li", "Anna", "Priya", "Omar", "Léa")
LAST = ("Doe", "Smith", "García", "Müller", "Jones", "Nguyen", "Rossi", "Kim", "Okafor")
SOURCES = ("website", "facebook", "google_ads", "referral", "chat_widget")
STATUS_WEIGHTS = {"new": 40, "contacted": 20, "qualified": 15}


def fake_fields(rng: random.Random, i: int) -> dict[str, Any]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    return {
        "name": f"{first} {last}",
        "email": f"{first}.{last}{i}@example.com".lower(),
        "phone": f"+1-555-{rng.randrange(1000):03d}-{rng.randrange(10000):04d}",
        "source": rng.choice(SOURCES),
        "status": rng.choices(STATUSES, [STATUS_WEIGHTS.get(s, 5) for s in STATUSES])[0],
        "metadata": {"utm_source": rng.choice(["google", "newsletter"]), "seats": i % 50},
    }


async def seed(uri: str, database: str, leads: int, total: int) -> dict[str, Any]:
    """The tenant, and the ids of the leads of its chatbot (the ones GET reads)."""
    mongo = Mongo(uri, database)
    try:
        await mongo.connect()  # as the admin commands do: learns the store's quirks
        await ensure_all_indexes(mongo)
        accounts, repo = AccountRepository(mongo), LeadRepository(mongo)
        workspace = await accounts.create_workspace(name="HTTP bench")
        chatbots = [
            await accounts.create_chatbot(workspace_id=workspace["id"], name=f"Bench bot {n}")
            for n in range(1 + OTHER_CHATBOTS)
        ]
        # A huge per-key bucket: every request takes a token, none is ever refused.
        issued = await accounts.create_key(
            workspace_id=workspace["id"],
            name="bench-http",
            rate_limit_capacity=10**9,
            rate_limit_refill=10**9,
        )
        rest = total - leads
        counts = [leads] + [
            rest // OTHER_CHATBOTS + (n < rest % OTHER_CHATBOTS) for n in range(OTHER_CHATBOTS)
        ]
        rng, now, lead_ids = random.Random(20240115), datetime.now(UTC), []
        for chatbot, count in zip(chatbots, counts, strict=True):
            for offset in range(0, count, SEED_BATCH):
                docs = [
                    build_lead_document(
                        chatbot["id"],
                        workspace["id"],
                        fake_fields(rng, i),
                        now - SEED_SPREAD * rng.random(),
                    )
                    for i in range(offset, min(count, offset + SEED_BATCH))
                ]
                await repo.insert_many(docs=docs)  # gives each its _id
                if chatbot is chatbots[0]:
                    lead_ids += [doc["_id"] for doc in docs]
            # What `admin recount` does: a bulk load bypasses the counters lists read.
            await repo.recount(chatbot_id=chatbot["id"])
    finally:
        await mongo.close()
    return {"chatbot": chatbots[0]["id"], "key": issued.secret, "lead_ids": lead_ids}


def drop_database(uri: str, database: str) -> None:
    """Drop our database from an external store, waiting a bounded time.

    The drop waits for the store's locks, and a store can hold them for a long time after
    the API's abandoned transactions (a SecantusDB run once wedged here for minutes): warn
    and go on rather than hang.
    """
    client = MongoClient(uri, serverSelectionTimeoutMS=5000, socketTimeoutMS=DROP_TIMEOUT_MS)
    try:
        client.drop_database(database)
    except PyMongoError as exc:
        print(f"WARNING: database {database} not dropped: {exc}", file=sys.stderr)
    finally:
        client.close()


# ---------------------------------------------------------------- servers


def _die_with_parent() -> None:  # in the child between fork and exec
    try:  # PR_SET_PDEATHSIG: a benchmark killed outright leaves no server behind
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except OSError:
        pass
    os.setpgrp()  # Ctrl-C reaches only us; we stop the servers in order


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    headers: dict[str, str]
    env: dict[str, str]
    rounds: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def log_tail(self) -> str:
        """The end of the log, less the access lines at INFO (--deployed: one a request)."""
        kept: deque[str] = deque()
        size = 0
        with self.log_path.open(errors="replace") as lines:
            for line in lines:
                if all(mark in line for mark in ACCESS_LINE_MARKS):
                    continue
                kept.append(line)
                size += len(line)
                while size > LOG_TAIL_CHARS and len(kept) > 1:
                    size -= len(kept.popleft())
        return "".join(kept)[-LOG_TAIL_CHARS:]

    def access_log(self) -> dict[str, Any]:
        """Access lines at INFO in the log (warm-up and smoke test included), the bytes they
        take, and how many answered each status."""
        count = size = 0
        statuses: Counter[str] = Counter()
        with self.log_path.open("rb") as lines:
            for line in lines:
                if all(mark.encode() in line for mark in ACCESS_LINE_MARKS):
                    count += 1
                    size += len(line)
                    found = ACCESS_STATUS.search(line)
                    statuses[found.group(1).decode() if found else "?"] += 1
        return {"lines": count, "bytes": size, "statuses": dict(sorted(statuses.items()))}


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A private redis-server on a free port, nothing saved ($REDIS_SERVER_BIN or PATH's)."""
    port = free_port()
    binary = os.environ.get("REDIS_SERVER_BIN") or "redis-server"
    argv = [binary, "--port", str(port), "--save", "", "--appendonly", "no"]
    argv += ["--bind", "127.0.0.1", "--dir", str(workdir)]
    with (workdir / "redis.log").open("wb") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
    deadline = time.monotonic() + 10
    while not port_open("127.0.0.1", port):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc, 5)
            raise SystemExit(f"redis-server did not start: {(workdir / 'redis.log').read_text()}")
        time.sleep(0.05)
    return proc, port


def redis_version() -> str:
    binary = os.environ.get("REDIS_SERVER_BIN") or "redis-server"
    done = subprocess.run([binary, "--version"], capture_output=True, text=True)
    found = re.search(r"\bv=(\S+)", done.stdout)  # "Redis server v=7.0.15 sha=..."
    return f"Redis {found.group(1)}" if found else done.stdout.strip() or "?"


def start_server(
    name: str,
    workdir: Path,
    uri: str,
    database: str,
    key: str,
    args: argparse.Namespace,
    redis_port: int | None = None,
) -> Server:
    """``redis_port``: the api as deployed (--deployed), its rate limit in that Redis."""
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PB_", "MONGODB_", "REDIS_", "RATELIMIT_"))
        and k not in ("HOST", "PORT", "LOG_LEVEL", "LOG_FORMAT", "CURSOR_SECRET")
    }
    env.update(
        MONGODB_URI=uri,
        MONGODB_DATABASE=database,
        LOG_LEVEL="WARNING",  # no access log lines
        CURSOR_SECRET=secrets.token_urlsafe(32),
        PB_DATA_DIR=str(workdir / "var"),
    )
    if name == "api":
        if args.api_driver:
            env["MONGODB_DRIVER"] = args.api_driver
        if redis_port is not None:
            env.update(
                REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
                LOG_LEVEL="INFO",  # one access line per request
                LOG_FORMAT="json",
            )
        argv = [sys.executable, "-m", "pollybot_leads", "serve", "--workers", str(args.workers)]
        headers = {"Authorization": f"Bearer {key}"}
    else:
        argv = [
            sys.executable,
            str(FLOOR_SCRIPT),
            *([] if args.floor_journal else ["--no-journal"]),
        ]
        headers = {}  # the floor has no auth; it would ignore the header anyway
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    log_path = workdir / f"server-{name}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
            stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
        )  # fmt: skip
    return Server(name, port, process, log_path, headers, env)


def api_store_settings(env: dict[str, str]) -> dict[str, Any]:
    """The driver and write concern the API runs with, as its own settings loader sees them
    (they are the configuration's defaults unless --api-driver is given)."""
    names = ("mongodb_driver", "mongodb_w", "mongodb_journal")
    code = (
        "import json; from pollybot_leads.settings import load_settings; s = load_settings(); "
        f"print(json.dumps({{n: getattr(s, n, None) for n in {names!r}}}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True
    )
    try:
        return json.loads(done.stdout)
    except ValueError:
        return {"error": done.stderr[-500:]}


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


def wait_until_listening(server: Server, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    # The api prints its banner once every worker listens; the floor has none.
    while not port_open("127.0.0.1", server.port) or (
        server.name == "api" and "Stop with Ctrl-C" not in server.log_path.read_text()
    ):
        if server.process.poll() is not None:
            raise SystemExit(f"{server.name} server exited:\n{server.log_tail()}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{server.name} server did not listen:\n{server.log_tail()}")
        time.sleep(0.05)


def smoke_test(server: Server, base: str, lead_id: str) -> None:
    """One request of each kind, checked, before anything is timed."""
    checks = (
        ("GET", f"{base}/{lead_id}", None, 200),
        ("GET", f"{base}?limit=10", None, 200),
        ("POST", base, json.dumps(create_body(0, 0)), 201),
    )
    headers = {**server.headers, "Content-Type": "application/json"}
    for method, target, body, expected in checks:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            connection.request(method, target, body, headers)
            response = connection.getresponse()
            status, payload = response.status, response.read()
        finally:
            connection.close()
        if status != expected or not json.loads(payload).get("success"):
            raise SystemExit(
                f"{server.name}: {method} {target} answered {status} {payload[:500]!r}\n"
                f"{server.log_tail()}"
            )


# ---------------------------------------------------------------- load generators


def create_body(worker: int, n: int) -> dict[str, Any]:
    tag = f"{worker}.{n}.{random.randrange(10**9)}"
    return {
        "name": f"Bench Lead {tag}",
        "email": f"bench.{tag}@example.com",
        "source": "bench",
        "metadata": {"utm_source": "bench", "n": n},
    }


WRK_SCRIPT = """\
-- Written by scripts/bench_http.py for one server and one operation.
local op, base = %(op)s, %(base)s
local ids = {%(ids)s}
local get_headers = {%(auth)s}
local post_headers = {%(auth)s ["Content-Type"] = "application/json"}
local threads, next_tid = {}, 1
statuses, sent = {}, 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(os.time() * 100 + tid)
end

function request()
  sent = sent + 1
  if op == "get" then
    return wrk.format("GET", base .. "/" .. ids[math.random(#ids)], get_headers)
  elseif op == "list" then
    return wrk.format("GET", base .. "?limit=10", get_headers)
  end
  local tag = string.format("%%d.%%d.%%d", tid, sent, math.random(1, 1000000000))
  local body = string.format('{"name":"Bench Lead %%s","email":"bench.%%s@example.com",'
    .. '"source":"bench","metadata":{"utm_source":"bench","n":%%d}}', tag, tag, sent)
  return wrk.format("POST", base, post_headers, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local codes, parts, total_sent = {}, {}, 0
  for _, thread in ipairs(threads) do
    total_sent = total_sent + thread:get("sent")
    for status, n in pairs(thread:get("statuses")) do
      codes[status] = (codes[status] or 0) + n
    end
  end
  for status, n in pairs(codes) do
    table.insert(parts, string.format('"%%d":%%d', status, n))
  end
  local e = summary.errors
  io.write(string.format('%(mark)s{"requests":%%d,"sent":%%d,"duration_s":%%.6f,"statuses":{%%s},'
    .. '"socket_errors":%%d,"latency_p50_ms":%%.3f,"latency_p99_ms":%%.3f}\\n',
    summary.requests, total_sent, summary.duration / 1e6, table.concat(parts, ","),
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""
SAFE = re.compile(r"[\w\-./?=: ]*")


def lua_string(text: str) -> str:
    if not SAFE.fullmatch(text):  # ids, keys and paths are all plain ASCII
        raise ValueError(f"unexpected characters in {text!r}")
    return f'"{text}"'


@dataclass
class Load:
    """The same load for both servers: ``connections`` keep-alive connections."""

    tool: str  # "wrk" or "python"
    workdir: Path
    base: str
    lead_ids: list[str]
    connections: int
    threads: int

    def run(self, server: Server, op: str, seconds: int) -> dict[str, Any]:
        if self.tool == "wrk":
            return self._wrk(server, op, seconds)
        spec = {
            "url": f"http://127.0.0.1:{server.port}{self.base}",
            "op": op,
            "ids": self.lead_ids,
            "headers": server.headers,
            "seconds": seconds,
            "connections": self.connections,
        }
        return self._child([sys.executable, __file__, "--loadgen"], json.dumps(spec), seconds)

    def _wrk(self, server: Server, op: str, seconds: int) -> dict[str, Any]:
        script = self.workdir / f"wrk-{server.name}-{op}.lua"
        if not script.exists():
            auth = "".join(
                f"[{lua_string(k)}] = {lua_string(v)}," for k, v in server.headers.items()
            )
            ids = ",".join(lua_string(i) for i in self.lead_ids)
            script.write_text(
                WRK_SCRIPT
                % {"op": lua_string(op), "base": lua_string(self.base), "ids": ids,
                   "auth": auth, "mark": RESULT_MARK}
            )  # fmt: skip
        argv = ["wrk", "-t", str(self.threads), "-c", str(self.connections), "-d", f"{seconds}s"]
        argv += ["--timeout", "30s", "-s", str(script), f"http://127.0.0.1:{server.port}/"]
        return self._child(argv, None, seconds)

    @staticmethod
    def _child(argv: list[str], stdin: str | None, seconds: int) -> dict[str, Any]:
        done = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=seconds + 120
        )
        for line in done.stdout.splitlines():
            if line.startswith(RESULT_MARK):
                result = json.loads(line[len(RESULT_MARK) :])
                result["statuses"] = {int(k): v for k, v in result["statuses"].items()}
                return result
        raise SystemExit(f"load generator failed ({done.returncode}):\n{done.stdout}{done.stderr}")


def python_loadgen(spec: dict[str, Any]) -> None:
    """The fallback load generator (``--loadgen``, in its own process): one JSON line out."""
    import aiohttp

    async def run() -> dict[str, Any]:
        statuses: Counter[int] = Counter()
        latencies: list[float] = []
        errors = sent_total = 0
        url, ids, op = spec["url"], spec["ids"], spec["op"]
        deadline = time.perf_counter() + spec["seconds"]

        async def worker(session: aiohttp.ClientSession, number: int) -> None:
            nonlocal errors, sent_total
            sent = 0
            while time.perf_counter() < deadline:  # a request started is awaited to its end
                sent += 1
                sent_total += 1
                if op == "get":
                    call = session.get(f"{url}/{random.choice(ids)}")
                elif op == "list":
                    call = session.get(f"{url}?limit=10")
                else:
                    call = session.post(url, json=create_body(number, sent))
                start = time.perf_counter()
                try:
                    async with call as resp:
                        await resp.read()
                        statuses[resp.status] += 1
                except (aiohttp.ClientError, TimeoutError):
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - start)

        connector = aiohttp.TCPConnector(limit=spec["connections"])
        async with aiohttp.ClientSession(connector=connector, headers=spec["headers"]) as session:
            first_request = time.monotonic()  # system-wide clock: the parent compares it
            started = time.perf_counter()
            await asyncio.gather(*(worker(session, n) for n in range(spec["connections"])))
            elapsed = time.perf_counter() - started
        latencies.sort()

        def pct(q: float) -> float:
            return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

        return {
            "requests": sum(statuses.values()),
            "sent": sent_total,
            "duration_s": elapsed,
            "started_monotonic": first_request,
            "statuses": dict(statuses),
            "socket_errors": errors,
            "latency_p50_ms": pct(0.50) if latencies else None,
            "latency_p99_ms": pct(0.99) if latencies else None,
        }

    try:
        import uvloop

        result = uvloop.run(run())
    except ImportError:
        result = asyncio.run(run())
    print(RESULT_MARK + json.dumps(result), flush=True)


# ---------------------------------------------------------------- measuring


def measure(
    load: Load,
    server: Server,
    op: str,
    seconds: int,
    store_pid: int | None,
    count_created: Callable[[datetime], int],
    redis_pid: int | None = None,
) -> dict[str, Any]:
    """One timed round, from the first request until the server and store are idle again.

    The round's work is every request the server received: those completed in time, and
    those in flight when the load generator stopped, which the server finishes after it
    (64 connections on a slow operation are seconds of queued work). So CPU per request
    is over every request sent, and requests/s counts the successful ones (creates: the
    leads stored; reads: those sent less the failures seen) over the time until the last
    was served. The load generator's own count and rate are kept beside them.

    ``redis_pid`` (the api's rounds with --deployed): the Redis server's CPU is measured
    too. It is not waited on: the api waits for each reply, so idle api, idle Redis.
    """
    server_pids = process_tree(server.process.pid)
    store_pids = process_tree(store_pid) if store_pid else []
    since = datetime.now(UTC) - timedelta(milliseconds=1)  # createdAt is in milliseconds
    server_cpu, store_cpu = cpu_seconds(server_pids), cpu_seconds(store_pids)
    redis_cpu = cpu_seconds([redis_pid]) if redis_pid else 0.0
    load_cpu, busy = children_cpu_seconds(), machine_busy_ticks()
    started = time.monotonic()
    result = load.run(server, op, seconds)
    ended = wait_until_idle(server_pids + store_pids, quiet_seconds(store_pid))
    # The Python load generator takes a moment to start; wrk does not, and does not say.
    active = ended - max(started, result.get("started_monotonic", started))
    server_cpu = cpu_seconds(server_pids) - server_cpu
    store_cpu = cpu_seconds(store_pids) - store_cpu if store_pid else None
    redis_cpu_used = cpu_seconds([redis_pid]) - redis_cpu if redis_pid else None
    load_cpu = children_cpu_seconds() - load_cpu
    busy = machine_busy_ticks() - busy
    sent = result["sent"]
    failed = sum(n for status, n in result["statuses"].items() if not 200 <= status < 300)
    succeeded = count_created(since) if op == "create" else sent - failed - result["socket_errors"]

    def per_request(value: float | None) -> float | None:
        return value * 1e6 / sent if value is not None and sent else None

    return {
        "requests_succeeded": succeeded,
        "requests_sent": sent,
        "requests_completed": result["requests"],
        "active_seconds": active,
        "load_seconds": result["duration_s"],
        "requests_per_second": succeeded / active,
        "client_requests_per_second": result["requests"] / result["duration_s"],
        "non_2xx": failed,
        "socket_errors": result["socket_errors"],
        "statuses": result["statuses"],
        "latency_p50_ms": result["latency_p50_ms"],
        "latency_p99_ms": result["latency_p99_ms"],
        "server_cpu_us_per_request": per_request(server_cpu),
        "store_cpu_us_per_request": per_request(store_cpu),
        "redis_cpu_us_per_request": per_request(redis_cpu_used),
        "server_and_redis_cpu_us_per_request": per_request(server_cpu + (redis_cpu_used or 0)),
        "loadgen_cpu_us_per_request": per_request(load_cpu),
        "server_cores": server_cpu / active,
        "store_cores": store_cpu / active if store_cpu is not None else None,
        "redis_cores": redis_cpu_used / active if redis_cpu_used is not None else None,
        "loadgen_cores": load_cpu / (ended - started),
        # Cores busy on the machine meanwhile beyond server, store and load generator: other
        # work on a shared machine (and this script, which mostly waits).
        "other_cores": (
            busy / CLOCK_TICKS - server_cpu - (store_cpu or 0) - (redis_cpu_used or 0) - load_cpu
        )
        / (ended - started),
    }


MEDIAN_KEYS = (
    "requests_per_second",
    "client_requests_per_second",
    "active_seconds",
    "server_cpu_us_per_request",
    "store_cpu_us_per_request",
    "redis_cpu_us_per_request",
    "server_and_redis_cpu_us_per_request",
    "loadgen_cpu_us_per_request",
    "latency_p50_ms",
    "latency_p99_ms",
    "server_cores",
    "store_cores",
    "redis_cores",
    "other_cores",
)
RATIO_KEYS = (
    "requests_per_second",
    "server_cpu_us_per_request",
    "server_and_redis_cpu_us_per_request",  # the api's with its Redis's, to the floor's own
    "store_cpu_us_per_request",
)


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarise(servers: dict[str, Server], ops: tuple[str, ...]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for op in ops:
        row: dict[str, Any] = {}
        for name, server in servers.items():
            rounds = server.rounds[op]
            row[name] = {key: median([r[key] for r in rounds]) for key in MEDIAN_KEYS}
            row[name]["non_2xx"] = sum(r["non_2xx"] for r in rounds)
            row[name]["socket_errors"] = sum(r["socket_errors"] for r in rounds)
            row[name]["requests_succeeded"] = sum(r["requests_succeeded"] for r in rounds)
            row[name]["rounds"] = rounds
        api, floor = row["api"], row["floor"]
        row["api_over_floor"] = {key: ratio(api[key], floor[key]) for key in RATIO_KEYS}
        # Rounds of one pair run back to back: their ratio is least disturbed by drift.
        row["api_over_floor_paired"] = {
            key: median(
                [ratio(a[key], f[key]) for a, f in zip(api["rounds"], floor["rounds"], strict=True)]
            )
            for key in RATIO_KEYS
        }
        results[op] = row
    return results


METRIC_LINE = re.compile(r"^(pollybot_\w+)\{(.*)\} (\S+)$")  # a route template holds {}
METRIC_LABEL = re.compile(r'(\w+)="([^"]*)"')


def scrape_metrics(server: Server) -> dict[str, Any]:
    """The api's /metrics once (--deployed): its rate-limit decisions and requests counted."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        status, text = response.status, response.read().decode(errors="replace")
    finally:
        connection.close()
    decisions: Counter[str] = Counter()
    requests = 0.0
    for line in text.splitlines():
        if not (found := METRIC_LINE.match(line)):
            continue
        name, labels = found.group(1), dict(METRIC_LABEL.findall(found.group(2)))
        if name == "pollybot_ratelimit_decisions_total":
            decisions[f"{labels.get('bucket')}/{labels.get('decision')}"] += int(
                float(found.group(3))
            )
        elif name == "pollybot_http_requests_total":
            requests += float(found.group(3))
    return {
        "status": status,
        "bytes": len(text),
        "ratelimit_decisions": dict(decisions),  # "bucket/decision": count
        "http_requests_total": int(requests),
    }


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for op, key, sense, aim in TARGETS:
        if op not in results:
            continue
        value = results[op]["api_over_floor"][key]
        met = value is not None and (value >= aim if sense == ">=" else value <= aim)
        out.append(
            {"operation": op, "metric": key, "aim": f"{sense} {aim}", "value": value, "met": met}
        )
    return out


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render(report: dict[str, Any]) -> str:
    setup, results = report["setup"], report["results"]
    lines = [
        f"HTTP benchmark, api{' as deployed' if setup['deployed'] else ''} against floor: "
        f"{setup['rounds']} rounds x {setup['seconds']} s per "
        f"operation and server, alternating; {setup['load_generator']} with "
        f"{setup['connections']} connections; {setup['leads']:,} leads in the chatbot "
        f"({setup['total_leads']:,} in all); {setup['store']}; "
        f"{report['machine']['nproc']} CPUs; medians over rounds. req/s: successful requests "
        "per second; µs/req: CPU per request sent",
        "",
        f"{'operation':<9} {'api req/s':>9} {'floor req/s':>11} {'ratio':>6}   "
        f"{'server µs/req api / floor':>25} {'ratio':>6}   "
        f"{'store µs/req api / floor':>24} {'ratio':>6}   {'failed api/floor':>16}",
    ]
    lines.append("-" * len(lines[-1]))
    for op in results:
        row = results[op]
        api, floor, rel = row["api"], row["floor"], row["api_over_floor"]
        failed = f"{api['non_2xx'] + api['socket_errors']}/"
        failed += f"{floor['non_2xx'] + floor['socket_errors']}"
        lines.append(
            f"{op:<9} {fmt(api['requests_per_second'], '9.0f')} "
            f"{fmt(floor['requests_per_second'], '11.0f')} "
            f"{fmt(rel['requests_per_second'], '6.2f')}   "
            f"{fmt(api['server_cpu_us_per_request'], '12.0f')} / "
            f"{fmt(floor['server_cpu_us_per_request'], '<10.0f')} "
            f"{fmt(rel['server_cpu_us_per_request'], '6.2f')}   "
            f"{fmt(api['store_cpu_us_per_request'], '11.0f')} / "
            f"{fmt(floor['store_cpu_us_per_request'], '<10.0f')} "
            f"{fmt(rel['store_cpu_us_per_request'], '6.2f')}   {failed:>16}"
        )
    lines += ["", "Latency p50 / p99 ms (api | floor), and cores busy elsewhere on the machine:"]
    for op in results:
        api, floor = results[op]["api"], results[op]["floor"]
        lines.append(
            f"  {op:<7} {fmt(api['latency_p50_ms'], '.1f')} / {fmt(api['latency_p99_ms'], '.1f')}"
            f" | {fmt(floor['latency_p50_ms'], '.1f')} / {fmt(floor['latency_p99_ms'], '.1f')}"
            f"   other work: {fmt(api['other_cores'], '.2f')} | "
            f"{fmt(floor['other_cores'], '.2f')} cores"
        )
    if deployed := report.get("deployed"):
        lines += [
            "",
            f"Deployed api: {setup['api_rate_limit']}; {setup['api_logging']}; "
            f"{setup['api_metrics']}. Server CPU (api + its Redis | floor):",
        ]
        for op in results:
            api, floor = results[op]["api"], results[op]["floor"]
            rel = results[op]["api_over_floor"]
            lines.append(
                f"  {op:<7} {fmt(api['server_cpu_us_per_request'], '.0f')} + "
                f"{fmt(api['redis_cpu_us_per_request'], '.0f')} Redis = "
                f"{fmt(api['server_and_redis_cpu_us_per_request'], '.0f')} µs/req | "
                f"{fmt(floor['server_cpu_us_per_request'], '.0f')} µs/req "
                f"(ratio {fmt(rel['server_and_redis_cpu_us_per_request'], '.2f')}); cores "
                f"{fmt(api['server_cores'], '.2f')} + {fmt(api['redis_cores'], '.2f')} | "
                f"{fmt(floor['server_cores'], '.2f')}"
            )
        access, scraped = deployed["access_log"], deployed["metrics"]
        per_line = access["bytes"] / access["lines"] if access["lines"] else 0
        lines.append(
            f"  access log: {access['lines']:,} JSON lines at INFO ({per_line:.0f} bytes each; "
            + ", ".join(f"{status}: {n:,}" for status, n in access["statuses"].items())
            + "; warm-up included); "
            f"/metrics ({scraped['status']}, {scraped['bytes']:,} bytes): "
            f"{scraped['http_requests_total']:,} requests, rate-limit decisions "
            + (", ".join(f"{k} {v:,}" for k, v in sorted(scraped["ratelimit_decisions"].items())
                         if v) or "none")
        )  # fmt: skip
    lines += ["", "Targets (api / floor):"]
    for verdict in report["targets"]:
        label = "throughput" if verdict["metric"] == "requests_per_second" else "server CPU"
        lines.append(
            f"  {verdict['operation']:<7} {label:<11} {verdict['aim']:<7} "
            f"measured {fmt(verdict['value'], '.2f'):>5}  "
            f"{'met' if verdict['met'] else 'MISSED'}"
        )
    if report["failed_requests"]:
        lines += [
            "",
            f"WARNING: {report['failed_requests']} requests failed (non-2xx or socket errors; "
            "statuses per round and the servers' log tails are in the JSON). req/s counts "
            "only successful requests; CPU per request counts the failed ones too.",
        ]
    if deployed and (refused := deployed["requests_without_redis"]):
        lines += [
            "",
            f"WARNING: {refused:,} rate-limit decisions were made without Redis (degraded or "
            "unavailable): those requests did not pay the limiter's round trip.",
        ]
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    store = None
    uri = os.environ.get("MONGODB_URI")
    database = f"bench_http_{secrets.token_hex(4)}"
    servers: dict[str, Server] = {}
    counter: MongoClient | None = None
    redis: subprocess.Popen[bytes] | None = None
    redis_port: int | None = None
    scraped: dict[str, Any] | None = None
    load_before = os.getloadavg()
    try:
        if args.deployed:
            redis, redis_port = start_redis(workdir)
        if not uri:
            store = EmbeddedStore(workdir / "secantusdb", free_port(), cache_size="4G")
            store.start()
            uri = store.uri
        print(f"seeding {args.total:,} leads ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        tenant = asyncio.run(seed(uri, database, args.leads, args.total))
        seed_seconds = time.perf_counter() - started
        for name in SERVERS:
            servers[name] = start_server(
                name, workdir, uri, database, tenant["key"], args,
                redis_port if name == "api" else None,
            )  # fmt: skip
        base = f"/api/v1/chatbots/{tenant['chatbot']}/leads"
        api_settings = api_store_settings(servers["api"].env)
        for server in servers.values():
            wait_until_listening(server)
            smoke_test(server, base, tenant["lead_ids"][0])
        tool = args.load_generator
        if tool == "auto":
            tool = "wrk" if shutil.which("wrk") else "python"
        load = Load(tool, workdir, base, tenant["lead_ids"], args.connections, args.threads)
        store_pid = store.process.pid if store and store.process else None
        store_pids = process_tree(store_pid) if store_pid else []
        counter = MongoClient(uri, tz_aware=True)
        leads = counter[database]["leads"]

        def count_created(since: datetime) -> int:
            query = {"chatbotId": tenant["chatbot"], "createdAt": {"$gte": since}}
            return leads.count_documents(query)

        started = time.perf_counter()
        for op in args.ops:
            if args.warmup:  # connections, caches, first-time imports: never timed
                for server in servers.values():
                    load.run(server, op, args.warmup)
                    server_pids = process_tree(server.process.pid)
                    wait_until_idle(server_pids + store_pids, quiet_seconds(store_pid))
            for number in range(args.rounds):
                order = SERVERS if number % 2 == 0 else SERVERS[::-1]
                for name in order:
                    server = servers[name]
                    redis_pid = redis.pid if redis is not None and name == "api" else None
                    result = measure(
                        load, server, op, args.seconds, store_pid, count_created, redis_pid
                    )
                    result["round"] = number + 1
                    server.rounds.setdefault(op, []).append(result)
                    print(
                        f"  {op:<6} round {number + 1}/{args.rounds} {name:<5} "
                        f"{result['requests_per_second']:7.0f} req/s  server "
                        f"{fmt(result['server_cpu_us_per_request'], '6.0f')} µs/req  store "
                        f"{fmt(result['store_cpu_us_per_request'], '6.0f')} µs/req  "
                        f"ok {result['requests_succeeded']} (sent {result['requests_sent']}, "
                        f"done in time {result['requests_completed']}) in "
                        f"{result['active_seconds']:.1f} s  "
                        f"failed {result['non_2xx'] + result['socket_errors']}  "
                        f"other work {result['other_cores']:.2f} cores",
                        file=sys.stderr,
                        flush=True,
                    )
        measured_seconds = time.perf_counter() - started
        if args.deployed:  # as Prometheus would, once: and it shows the limiter took part
            scraped = scrape_metrics(servers["api"])
    finally:
        if counter is not None:
            counter.close()
        for server in servers.values():
            stop_server(server)
        if redis is not None:
            stop_process(redis, 5)
        if store is not None:
            store.stop()
        elif uri:
            drop_database(uri, database)

    results = summarise(servers, args.ops)
    failed = sum(
        results[op][name]["non_2xx"] + results[op][name]["socket_errors"]
        for op in args.ops
        for name in SERVERS
    )
    wrk_path = shutil.which("wrk")
    deployed = None
    if scraped is not None:
        decisions = scraped["ratelimit_decisions"]
        deployed = {
            "metrics": scraped,
            "access_log": servers["api"].access_log(),
            "requests_without_redis": decisions.get("key/degraded", 0)
            + decisions.get("key/unavailable", 0),
        }
    return {
        "benchmark": "http",
        "operations": {
            "get": "GET /api/v1/chatbots/{chatbotId}/leads/{leadId} (a random seeded lead)",
            "list": "GET /api/v1/chatbots/{chatbotId}/leads?limit=10 (page 1)",
            "create": "POST /api/v1/chatbots/{chatbotId}/leads",
        },
        "setup": {
            "rounds": args.rounds,
            "seconds": args.seconds,
            "warmup_seconds": args.warmup,
            "connections": args.connections,
            "threads": args.threads if tool == "wrk" else None,
            "load_generator": tool,
            "leads": args.leads,
            "total_leads": args.total,
            "chatbots": 1 + OTHER_CHATBOTS,
            "seed_seconds": round(seed_seconds, 1),
            "measured_seconds": round(measured_seconds, 1),
            "store": "MONGODB_URI" if store is None else "embedded SecantusDB (cache 4G)",
            "api_store_settings": api_settings,
            "deployed": args.deployed,
            "api_rate_limit": (
                f"Redis bucket (a private redis-server, {redis_version()}, at REDIS_URL "
                f"redis://127.0.0.1:{redis_port}/0), key capacity 10**9"
                if args.deployed
                else "in-process bucket (no REDIS_URL), key capacity 10**9"
            ),
            "api_logging": (
                "LOG_FORMAT=json, LOG_LEVEL=INFO: one access line per request, to a file"
                if args.deployed
                else "LOG_LEVEL=WARNING: no access lines"
            ),
            "api_metrics": "on (always collected); /metrics scraped once, at the end"
            if args.deployed
            else "on (always collected); not scraped",
            "api_workers": args.workers,
            "floor_driver": "pymongo AsyncMongoClient",
            "floor_create_write_concern": "w=1, j=true" if args.floor_journal else "w=1",
        },
        "machine": {
            "nproc": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "wrk": wrk_path,
            "wrk_version": _wrk_version() if wrk_path else None,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "notes": {
            "requests_per_second": "successful requests / seconds from the first request "
            "until server and store were idle again (requests in flight when the load "
            "generator stops are served after it); client_requests_per_second is the load "
            "generator's own count of responses over its duration",
            "requests_succeeded": "creates: leads stored in the round; reads: requests sent "
            "less the non-2xx responses and socket errors seen",
            "server_cpu_us_per_request": "utime+stime of the server process and its "
            f"descendants (/proc/<pid>/stat, {CLOCK_TICKS} ticks/s) from the round's start "
            "until idle, divided by the requests sent (every one was served, failed or not)",
            "store_cpu_us_per_request": "the same for the SecantusDB process; null when "
            "MONGODB_URI points elsewhere",
            "redis_cpu_us_per_request": "--deployed, the api's rounds: the same for the "
            "private redis-server holding the rate limit; null otherwise",
            "server_and_redis_cpu_us_per_request": "server CPU plus the Redis server's: what "
            "the api and its limiter's Redis spent, beside the floor's server alone",
            "api_over_floor": "ratio of the medians; api_over_floor_paired is the median of "
            "same-round-pair ratios",
            "other_cores": "cores busy on the machine beyond server, store and load "
            "generator during the round: other work on a shared machine (and the store "
            "itself when MONGODB_URI points at one on this machine)",
            "order": "operations run get, list, create: the created leads never change what "
            "get and list read",
        },
        "results": results,
        "targets": verdicts(results),
        "failed_requests": failed,
        "deployed": deployed,  # --deployed: the access log's size and the scraped metrics
        # What the servers logged (at WARNING): the reasons for failed requests, if any.
        "server_log_tails": {name: server.log_tail() for name, server in servers.items()},
    }


def _wrk_version() -> str:
    done = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    return (done.stdout or done.stderr).splitlines()[0] if (done.stdout or done.stderr) else "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, help="default bench-http.json (--deployed: bench-http-deployed.json)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="per operation and server")
    parser.add_argument("--seconds", type=int, default=5, help="per round")
    parser.add_argument("--warmup", type=int, default=1, help="seconds per operation and server")
    parser.add_argument("--leads", type=int, default=2000, help="in the chatbot under load")
    parser.add_argument("--total", type=int, default=5000, help="leads in all four chatbots")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--load-generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--api-driver", choices=("motor", "pymongo"), help="MONGODB_DRIVER")
    parser.add_argument("--workers", type=int, default=1, help="api processes (serve --workers)")
    parser.add_argument(
        "--deployed",
        action="store_true",
        help="the api as deployed: rate limit in a private Redis, JSON access log at INFO, "
        "metrics scraped",
    )
    parser.add_argument(
        "--floor-journal",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the floor acknowledges creates with j=true",
    )
    parser.add_argument(
        "--ops",
        type=lambda text: tuple(op for op in OPS if op in text.split(",")),
        default=OPS,
        help="comma-separated subset of get,list,create (run in that order)",
    )
    parser.add_argument("--loadgen", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.loadgen:  # the fallback load generator, run by ourselves as a subprocess
        python_loadgen(json.load(sys.stdin))
        return 0
    if min(args.rounds, args.seconds, args.leads, args.connections, args.threads, args.workers) < 1:
        parser.error("rounds, seconds, leads, connections, threads, workers must be at least 1")
    if not args.ops:
        parser.error("--ops names none of get, list, create")
    if args.total < args.leads:
        parser.error("--total must be at least --leads")
    if args.load_generator == "wrk" and not shutil.which("wrk"):
        parser.error("wrk is not installed (Debian: apt-get install wrk)")
    redis_binary = os.environ.get("REDIS_SERVER_BIN") or "redis-server"
    if args.deployed and not shutil.which(redis_binary):
        parser.error(f"--deployed needs {redis_binary} (Debian: apt-get install redis-server)")
    if args.out is None:
        args.out = Path("bench-http-deployed.json" if args.deployed else "bench-http.json")

    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop every subprocess.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        with tempfile.TemporaryDirectory(prefix="pb-bench-http-") as tmp:
            report = bench(args, Path(tmp))
    except KeyboardInterrupt:
        print("\ninterrupted: servers and store stopped", file=sys.stderr)
        return 130
    print(render(report))
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
