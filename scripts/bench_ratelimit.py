"""What the rate limiter costs: server CPU per request and requests/s, limiter on versus off.

Self-contained: starts its own SecantusDB and its own redis-server on free ports, creates a
tenant (its key's capacity is huge, so nothing is ever refused) and one lead, then runs the
real server (``python -m pollybot_leads serve``) in one subprocess per configuration, all
against the same store:

* ``off``      - the limiter disabled (RATELIMIT_ENABLED=0; REDIS_URL still set),
* ``redis``    - the limiter on, the Redis token bucket on the project's client (production),
* ``cluster``  - the same on a local 3-master Redis Cluster (``redis+cluster://``),
* ``redis-py`` - the same bucket handed a redis-py client (with hiredis when installed: a
  ``BlockingConnectionPool`` of 50, as the bucket used to build), for comparison; the
  server is started through a small bootstrap that swaps the client in,
* ``memory``   - the limiter on, the in-process bucket (no REDIS_URL).

``--configs`` picks some of them (``off`` is always run: it is the reference).

Rounds alternate between them (the order rotates every round), each a fixed number of GETs
of one lead over a fixed number of keep-alive connections. Server CPU is the CPU time of the
server process's threads over the round (/proc/<pid>/task/*/schedstat in ns; the coarser
utime+stime of /proc/<pid>/stat is kept beside it as a cross-check). EVALSHA calls and Redis
CPU come from INFO of the private Redis; round trips are counted by MONITOR over separate,
untimed requests. Comparisons with ``off`` are medians of same-round differences, which
drift in the machine's speed disturbs least. A table goes to stdout, JSON to ``--out``.

    python scripts/bench_ratelimit.py --out bench-ratelimit.json [--rounds 10 --requests 1500]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import redis

from pollybot_leads.accounts.repository import AccountRepository
from pollybot_leads.indexes import ensure_all_indexes
from pollybot_leads.ratelimit.redis_bucket import TAKE_SCRIPT
from pollybot_leads.store.client import Mongo
from pollybot_leads.store.embedded import EmbeddedStore, free_port, port_open

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
AIM_ROUND_TRIPS = 1.0
AIM_CPU_US = 60.0
# Sent once per new connection, not per request.
CONNECT_COMMANDS = frozenset({"hello", "client", "auth", "select"})

CONFIGS: dict[str, dict[str, Any]] = {
    "off": {"label": "limiter off", "redis": "plain", "enabled": False},
    "redis": {"label": "limiter on, Redis (own)", "redis": "plain", "enabled": True},
    "cluster": {"label": "limiter on, Cluster (own)", "redis": "cluster", "enabled": True},
    "redis-py": {"label": "limiter on, Redis (redis-py)", "redis": "plain", "enabled": True},
    "memory": {"label": "limiter on, in-process", "redis": "", "enabled": True},
}

# Serves with the bucket on a redis-py client: what the project used before for rediss://
# and unix://, kept here only to measure it beside the project's own client.
REDIS_PY_BOOTSTRAP = """
import sys
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
import pollybot_leads.app as app
from pollybot_leads.cli import main
from pollybot_leads.ratelimit.redis_bucket import RedisTokenBucket

def build_rate_limiter(settings):
    timeout = settings.redis_timeout_ms / 1000
    pool = BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=50, timeout=timeout, socket_timeout=timeout,
        socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))
    return RedisTokenBucket(Redis.from_pool(pool), timeout_ms=settings.redis_timeout_ms)

app.build_rate_limiter = build_rate_limiter
sys.exit(main(sys.argv[1:]))
"""


def _redis_server_module() -> Any:
    """tests/redis_server.py, loaded by path (scripts/ is not a package)."""
    path = ROOT / "tests" / "redis_server.py"
    spec = importlib.util.spec_from_file_location("_bench_redis_server", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid``, in seconds (clock-tick resolution)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of stat


def process_cpu_ns(pid: int) -> int | None:
    """CPU time of the threads of ``pid`` in nanoseconds (schedstat), None if unavailable.

    Threads that exited are not counted; the server's threads (event loop, the driver's
    pool and monitors) live as long as it does, which the stat cross-check confirms.
    """
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as fh:
                total += int(fh.read().split()[0])
        except FileNotFoundError:  # the thread has just exited
            continue
        except (OSError, ValueError, IndexError):
            return None
    return total


def redis_counters(clients: list[redis.Redis]) -> dict[str, float]:
    """Commands served (all, and EVALSHA) and CPU used so far by these Redis servers."""
    total = {"commands": 0.0, "evalsha": 0.0, "cpu": 0.0}
    for client in clients:
        stats = client.info("commandstats")
        cpu = client.info("cpu")
        calls = {name: int(v["calls"]) for name, v in stats.items()}
        total["commands"] += sum(n for name, n in calls.items() if name != "cmdstat_info")
        total["evalsha"] += calls.get("cmdstat_evalsha", 0)
        total["cpu"] += float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
    return total


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    redis_nodes: list[tuple[str, int]] = field(default_factory=list)  # the Redis it uses
    stats: list[redis.Redis] = field(default_factory=list)  # a client of each, for INFO
    session: aiohttp.ClientSession | None = None
    rounds: list[dict[str, float]] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


def start_server(
    name: str, workdir: Path, mongodb_uri: str, database: str, redis_urls: dict[str, str]
) -> Server:
    config = CONFIGS[name]
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PB_", "MONGODB_", "REDIS_", "RATELIMIT_"))
    }
    env.update(
        MONGODB_URI=mongodb_uri,
        MONGODB_DATABASE=database,
        REDIS_URL=redis_urls.get(config["redis"], ""),
        RATELIMIT_ENABLED="1" if config["enabled"] else "0",
        CURSOR_SECRET=secrets.token_urlsafe(32),
        LOG_LEVEL="WARNING",  # no access log lines: their cost is not the limiter's
        PB_DATA_DIR=str(workdir / f"var-{name}"),
    )
    log_path = workdir / f"server-{name}.log"
    with log_path.open("wb") as log_file:
        launch = ["-c", REDIS_PY_BOOTSTRAP] if name == "redis-py" else ["-m", "pollybot_leads"]
        process = subprocess.Popen(
            [sys.executable, *launch, "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    return Server(name, port, process, log_path)


def wait_until_listening(server: Server, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not port_open("127.0.0.1", server.port):
        if server.process.poll() is not None:
            raise SystemExit(f"server {server.name} exited:\n{server.log_tail()}")
        if time.monotonic() > deadline:
            raise SystemExit(f"server {server.name} did not listen:\n{server.log_tail()}")
        time.sleep(0.05)


async def create_tenant(mongodb_uri: str, database: str) -> dict[str, str]:
    mongo = Mongo(mongodb_uri, database)
    try:
        await mongo.connect()
        await ensure_all_indexes(mongo)
        accounts = AccountRepository(mongo)
        workspace = await accounts.create_workspace(name="Bench")
        chatbot = await accounts.create_chatbot(workspace_id=workspace["id"], name="Bench bot")
        # A huge per-key bucket: every request takes a token, none is ever refused.
        issued = await accounts.create_key(
            workspace_id=workspace["id"], rate_limit_capacity=10**12, rate_limit_refill=10**9
        )
    finally:
        await mongo.close()
    return {"chatbot": chatbot["id"], "key": issued.secret}


async def run_load(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], total: int, workers: int
) -> tuple[Counter[int], list[float], float]:
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    left = total

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            start = time.perf_counter()
            async with session.get(url, headers=headers) as resp:
                await resp.read()
                statuses[resp.status] += 1
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return statuses, latencies, time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Load:
    """The same load for every server: GET one lead, ``connections`` at a time."""

    path: str
    headers: dict[str, str]
    connections: int

    async def run(self, server: Server, requests: int) -> tuple[list[float], float]:
        assert server.session is not None
        statuses, latencies, elapsed = await run_load(
            server.session, server.base + self.path, self.headers, requests, self.connections
        )
        bad = {s: n for s, n in statuses.items() if s != 200}
        if bad:
            raise SystemExit(f"{server.name}: non-200 responses {bad}:\n{server.log_tail()}")
        return latencies, elapsed

    async def measure(self, server: Server, requests: int) -> dict[str, float]:
        pid = server.process.pid
        redis_before = redis_counters(server.stats)
        ticks_before, ns_before = process_cpu_seconds(pid), process_cpu_ns(pid)
        latencies, elapsed = await self.run(server, requests)
        ticks_after, ns_after = process_cpu_seconds(pid), process_cpu_ns(pid)
        redis_after = redis_counters(server.stats)
        ticks_us = (ticks_after - ticks_before) * 1e6 / requests
        if ns_before is None or ns_after is None:
            cpu_us = ticks_us
        else:
            cpu_us = (ns_after - ns_before) / 1000 / requests
        return {
            "requests": requests,
            "seconds": elapsed,
            "requests_per_second": requests / elapsed,
            "server_cpu_us_per_request": cpu_us,
            "server_cpu_us_per_request_stat": ticks_us,
            "evalsha_per_request": (redis_after["evalsha"] - redis_before["evalsha"]) / requests,
            # Commands run inside the Lua script (TIME, HMGET, ...) are counted here too.
            "redis_commands_per_request": (redis_after["commands"] - redis_before["commands"])
            / requests,
            "redis_cpu_us_per_request": (redis_after["cpu"] - redis_before["cpu"]) * 1e6 / requests,
            "latency_p50_ms": percentile(latencies, 0.50) * 1000,
            "latency_p99_ms": percentile(latencies, 0.99) * 1000,
        }

    async def round_trips(self, server: Server, requests: int) -> dict[str, int]:
        """Commands the server sends to Redis during ``requests`` requests, by name.

        Counted with MONITOR on every Redis node the server uses (which slows Redis down:
        never during a timed round); the commands a Lua script runs inside Redis
        ("[0 lua]") are no round trips and are left out.
        """
        monitors = []
        try:
            for host, port in server.redis_nodes:
                reader, writer = await asyncio.open_connection(host, port)
                monitors.append((reader, writer))
                writer.write(b"MONITOR\r\n")
                await writer.drain()
                if not (await reader.readline()).startswith(b"+OK"):
                    raise SystemExit("MONITOR was refused by the private Redis")
            await self.run(server, requests)
            marker = f"bench-marker-{secrets.token_hex(8)}"
            for stats in server.stats:
                stats.echo(marker)
            sent: Counter[str] = Counter()
            for reader, _ in monitors:
                while True:
                    line = await asyncio.wait_for(reader.readline(), 10)
                    if not line or marker.encode() in line:
                        break
                    source, _, command = line.partition(b"]")
                    if source.endswith(b" lua"):
                        continue
                    name = command.strip().split(b" ", 1)[0].strip(b'"')
                    sent[name.decode(errors="replace").lower()] += 1
            return dict(sent)
        finally:
            for _, writer in monitors:
                writer.close()
                await writer.wait_closed()


METRICS = (
    ("requests_per_second", "req/s", "{:>7.0f}"),
    ("server_cpu_us_per_request", "server CPU µs/req", "{:>17.1f}"),
    ("evalsha_per_request", "EVALSHA/req", "{:>11.3f}"),
    ("redis_cpu_us_per_request", "Redis CPU µs/req", "{:>16.1f}"),
    ("latency_p50_ms", "p50 ms", "{:>6.2f}"),
    ("latency_p99_ms", "p99 ms", "{:>6.2f}"),
)
ROUND_TRIPS = ("round_trips_per_request", "Redis round trips/req", "{:>21.3f}")
LABEL_WIDTH = 30


def medians(rounds: list[dict[str, float]]) -> dict[str, float]:
    keys = [key for key, _, _ in METRICS]
    keys += ["server_cpu_us_per_request_stat", "redis_commands_per_request"]
    return {key: statistics.median(r[key] for r in rounds) for key in keys}


def render(report: dict[str, Any]) -> str:
    setup, results = report["setup"], report["results"]
    columns = (*METRICS, ROUND_TRIPS)
    head = f"{'configuration':<{LABEL_WIDTH}}" + "".join(
        f"  {title:>{len(fmt.format(0))}}" for _, title, fmt in columns
    )
    lines = [
        f"Rate limiter benchmark: GET one lead; {setup['rounds']} rounds x "
        f"{setup['requests_per_round']} requests per configuration, interleaved; "
        f"{setup['connections']} connections; {setup['cpus']} CPUs; medians over rounds",
        "",
        head,
        "-" * len(head),
    ]
    for name, result in results.items():
        row = f"{CONFIGS[name]['label']:<{LABEL_WIDTH}}"
        for key, _, fmt in METRICS:
            row += "  " + fmt.format(result["median"][key])
        row += "  " + ROUND_TRIPS[2].format(result["round_trips_per_request"])
        lines.append(row)
    lines += ["", "Server CPU µs/request, round by round:"]
    for name, result in results.items():
        values = "  ".join(f"{r['server_cpu_us_per_request']:6.1f}" for r in result["rounds"])
        lines.append(f"  {CONFIGS[name]['label']:<{LABEL_WIDTH}}{values}")
    lines += ["", "Against the limiter off, medians of same-round differences [min .. max]:"]
    for name, cmp in report["comparison"].items():
        lines.append(
            f"  {CONFIGS[name]['label']:<{LABEL_WIDTH}}server CPU "
            f"{cmp['cpu_us_delta']:+.1f} µs/request [{cmp['cpu_us_delta_min']:+.1f} .. "
            f"{cmp['cpu_us_delta_max']:+.1f}] (x{cmp['cpu_ratio']:.3f}), requests/s "
            f"x{cmp['throughput_ratio']:.3f}"
        )
    lines += ["", f"Redis commands sent in {setup['monitor_requests']} requests (MONITOR):"]
    for name, result in results.items():
        sent = ", ".join(f"{c} {n}" for c, n in sorted(result["round_trip_commands"].items()))
        lines.append(
            f"  {CONFIGS[name]['label']:<{LABEL_WIDTH}}{sent or 'none'}: "
            f"{result['round_trips_per_request_after_connect']:.3f} round trips/request "
            "besides connection set-up"
        )
    aim = report["aim"]
    lines.append(
        f"Aim for a Redis bucket: <= {aim['max_round_trips']:g} round trip and "
        f"<= {aim['max_cpu_us']:g} µs server CPU per request (median same-round difference):"
    )
    for name, verdict in aim["by_configuration"].items():
        lines.append(
            f"  {CONFIGS[name]['label']:<{LABEL_WIDTH}}"
            f"round trips {'met' if verdict['round_trips_met'] else 'NOT met'}, "
            f"CPU {'met' if verdict['cpu_met'] else 'NOT met'}"
        )
    return "\n".join(lines)


async def create_lead(server: Server, leads_path: str, headers: dict[str, str]) -> str:
    """One lead to read; returns its path."""
    assert server.session is not None
    async with server.session.post(
        server.base + leads_path,
        json={"name": "Bench Lead", "email": "bench@example.com"},
        headers=headers,
    ) as resp:
        if resp.status != 201:
            raise SystemExit(f"could not create the lead: {resp.status} {await resp.text()}")
        return f"{leads_path}/{(await resp.json())['data']['id']}"


def compare(results: dict[str, Any], name: str) -> dict[str, float]:
    """``name`` against ``off``: medians, and medians of the same-round differences.

    Rounds of different configurations run back to back, so a same-round difference is
    what drift of the machine's speed during the run disturbs least: the verdict uses it.
    """
    on, off = results[name], results["off"]
    cpu, rps = "server_cpu_us_per_request", "requests_per_second"
    pairs = list(zip(on["rounds"], off["rounds"], strict=True))
    deltas = [a[cpu] - b[cpu] for a, b in pairs]
    return {
        "cpu_us_delta": statistics.median(deltas),
        "cpu_us_delta_min": min(deltas),
        "cpu_us_delta_max": max(deltas),
        "cpu_ratio": statistics.median(a[cpu] / b[cpu] for a, b in pairs),
        "throughput_ratio": statistics.median(a[rps] / b[rps] for a, b in pairs),
        "cpu_us_delta_of_medians": on["median"][cpu] - off["median"][cpu],
        "round_trips_per_request": on["round_trips_per_request"],
        "round_trips_per_request_after_connect": on["round_trips_per_request_after_connect"],
    }


async def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    redis_server_module = _redis_server_module()
    database = f"bench_ratelimit_{secrets.token_hex(4)}"
    names = [name for name in CONFIGS if name == "off" or name in args.configs]
    cluster = redis_server_module.RedisCluster() if "cluster" in names else None
    with (
        EmbeddedStore(workdir / "secantusdb", free_port()) as store,
        redis_server_module.RedisServer() as redis_server,
        cluster or contextlib.nullcontext(),
    ):
        redis_version = "?"
        tenant = await create_tenant(store.uri, database)
        plain = [(redis_server.host, redis_server.port)]
        nodes = {"plain": plain, "cluster": [], "": []}
        urls = {"plain": redis_server.url}
        if cluster is not None:
            nodes["cluster"] = [(node.host, node.port) for node in cluster.nodes]
            urls["cluster"] = cluster.url
        # The bucket loads its script itself; redis-py's client is not asked to (NOSCRIPT
        # from it would count as Redis being down), so it is loaded here first.
        with redis.Redis(*plain[0]) as loader:
            loader.script_load(TAKE_SCRIPT)
        servers = [start_server(name, workdir, store.uri, database, urls) for name in names]
        for server in servers:
            server.redis_nodes = nodes[CONFIGS[server.name]["redis"]]
            server.stats = [redis.Redis(host, port) for host, port in server.redis_nodes]
        headers = {"Authorization": f"Bearer {tenant['key']}"}
        load = Load(path="", headers=headers, connections=args.connections)
        round_trips: dict[str, dict[str, int]] = {}
        try:
            with redis.Redis(*plain[0]) as info:
                redis_version = info.info("server")["redis_version"]
            for server in servers:
                wait_until_listening(server)
                server.session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=args.connections)
                )
            leads_path = f"/api/v1/chatbots/{tenant['chatbot']}/leads"
            load.path = await create_lead(servers[0], leads_path, headers)

            # Warm up (connections, caches, the script loaded in Redis), then count the
            # round trips under MONITOR, which slows Redis down: never in a timed round.
            for server in servers:
                await load.run(server, args.warmup)
                round_trips[server.name] = await load.round_trips(server, args.monitor_requests)

            started = time.perf_counter()
            for number in range(args.rounds):
                shift = number % len(servers)
                for server in servers[shift:] + servers[:shift]:
                    result = await load.measure(server, args.requests)
                    result["round"] = number + 1
                    server.rounds.append(result)
                    print(
                        f"  round {number + 1}/{args.rounds}  {server.name:<8}"
                        f"{result['requests_per_second']:7.0f} req/s"
                        f"{result['server_cpu_us_per_request']:8.1f} µs CPU/req",
                        file=sys.stderr,
                        flush=True,
                    )
            measured_seconds = time.perf_counter() - started
        finally:
            for server in servers:
                if server.session is not None:
                    await server.session.close()
                server.process.terminate()
            for server in servers:
                try:
                    server.process.wait(10)
                except subprocess.TimeoutExpired:
                    server.process.kill()
                    server.process.wait()
                for stats in server.stats:
                    stats.close()

    results = {
        s.name: {
            "label": CONFIGS[s.name]["label"],
            "round_trips_per_request": sum(round_trips[s.name].values()) / args.monitor_requests,
            "round_trips_per_request_after_connect": sum(
                n for c, n in round_trips[s.name].items() if c not in CONNECT_COMMANDS
            )
            / args.monitor_requests,
            "round_trip_commands": round_trips[s.name],
            "median": medians(s.rounds),
            "rounds": s.rounds,
        }
        for s in servers
    }
    comparison = {name: compare(results, name) for name in names if name != "off"}
    return {
        "benchmark": "ratelimit",
        "endpoint": "GET /api/v1/chatbots/{chatbotId}/leads/{leadId}",
        "setup": {
            "rounds": args.rounds,
            "requests_per_round": args.requests,
            "warmup_requests": args.warmup,
            "monitor_requests": args.monitor_requests,
            "connections": args.connections,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "aiohttp": aiohttp.__version__,
            "redis_py": redis.__version__,
            "redis_server": redis_version,
            "measured_seconds": round(measured_seconds, 1),
        },
        "notes": {
            "server_cpu_us_per_request": "CPU time of the server process's threads over "
            "the round (/proc/<pid>/task/*/schedstat, ns), per request",
            "server_cpu_us_per_request_stat": "the same from utime+stime of /proc/<pid>/stat "
            f"({CLOCK_TICKS} ticks/s: coarse), a cross-check",
            "comparison": "medians over rounds of the same-round differences (or ratios) "
            "against the limiter off; cpu_us_delta_of_medians is the plain difference",
            "round_trips_per_request": "commands the server sent to Redis per request, "
            "counted by MONITOR over separate, untimed requests (script-internal "
            "commands excluded); _after_connect leaves out the connection handshake "
            f"({', '.join(sorted(CONNECT_COMMANDS))}) of connections opened meanwhile; "
            "round_trip_commands lists them by name",
            "evalsha_per_request": "INFO commandstats cmdstat_evalsha delta over the round",
            "redis_commands_per_request": "INFO commandstats delta over the round, "
            "including the commands the Lua script runs inside Redis",
            "redis_cpu_us_per_request": "used_cpu_user+used_cpu_sys delta of the Redis "
            "server over the round",
        },
        "configurations": {name: CONFIGS[name]["label"] for name in CONFIGS},
        "results": results,
        "comparison": comparison,
        "aim": {
            "max_round_trips": AIM_ROUND_TRIPS,
            "max_cpu_us": AIM_CPU_US,
            "by_configuration": {
                name: {
                    "round_trips_met": cmp["round_trips_per_request_after_connect"]
                    <= AIM_ROUND_TRIPS + 1e-9,
                    "cpu_met": cmp["cpu_us_delta"] <= AIM_CPU_US,
                }
                for name, cmp in comparison.items()
                if CONFIGS[name]["redis"]
            },
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench-ratelimit.json"))
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--requests", type=int, default=1500, help="per round and configuration")
    parser.add_argument("--warmup", type=int, default=500, help="per configuration")
    parser.add_argument(
        "--monitor-requests", type=int, default=300, help="per configuration, under MONITOR"
    )
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--configs",
        type=lambda text: [c.strip() for c in text.split(",") if c.strip()],
        default=[name for name in CONFIGS if name != "off"],
        help=f"comma-separated, of {', '.join(c for c in CONFIGS if c != 'off')} (all)",
    )
    args = parser.parse_args(argv)
    if min(args.rounds, args.requests, args.warmup, args.monitor_requests, args.connections) < 1:
        parser.error("every count must be at least 1")
    unknown = sorted(set(args.configs) - set(CONFIGS))
    if unknown or "redis" not in args.configs:
        parser.error(f"--configs: unknown {unknown}" if unknown else "--configs needs redis")

    with tempfile.TemporaryDirectory(prefix="pb-bench-ratelimit-") as tmp:
        report = asyncio.run(bench(args, Path(tmp)))
    text = render(report)
    print(text)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
