"""What one rate-limit take costs the API process, client by client: CPU µs per EVALSHA.

Starts its own redis-server and a local 3-master Redis Cluster (tests/redis_server.py),
then runs the bucket's script (EVALSHA, one key, the arguments a take sends) ``--takes``
times from 16 concurrent tasks on uvloop, per client, in ``--rounds`` interleaved rounds,
and reports the median process CPU time per call. The clients:

* ``own``            - pollybot_leads.ratelimit.resp.RespClient (what the bucket uses)
* ``own-cluster``    - pollybot_leads.ratelimit.resp_cluster.ClusterClient
* ``redis-py``       - redis.asyncio.Redis, a ConnectionPool of 50 (hiredis if installed)
* ``redis-py-exec``  - the same through ``execute_command`` (no per-command wrapper)
* ``redis-py-cluster`` - redis.asyncio.cluster.RedisCluster

Only the client's cost: the API's own work around a take (middleware, headers) is in
``make bench-ratelimit``. A table goes to stdout, JSON to ``--out``.

    python scripts/bench_redis_client.py --out bench-redis-client.json [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis
import uvloop
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.utils import HIREDIS_AVAILABLE

from pollybot_leads.ratelimit.redis_bucket import TAKE_SCRIPT, TAKE_SCRIPT_SHA
from pollybot_leads.ratelimit.resp import RespClient
from pollybot_leads.ratelimit.resp_cluster import ClusterClient

ROOT = Path(__file__).resolve().parent.parent
KEY = "pb:rl:bench"
ARGS = (10**9, "1000000000.0")  # capacity, refill: never refused
CONCURRENCY = 16

Call = Callable[[], Awaitable[Any]]


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


async def cpu_per_call(call: Call, takes: int) -> float:
    """Process CPU µs per call, ``takes`` calls from CONCURRENCY tasks."""
    left = takes

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            reply = await call()
            if len(reply) != 4:
                raise SystemExit(f"unexpected reply {reply!r}")

    for _ in range(200):  # warm: connections open, pools grown
        await call()
    start = time.process_time()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return (time.process_time() - start) / takes * 1e6


async def make_clients(url: str, cluster_url: str, cluster_seed: str) -> dict[str, Any]:
    """name -> (client or None, call); the caller closes the clients."""
    own = RespClient.from_url(url)
    await own.script_load(TAKE_SCRIPT)
    own_cluster = ClusterClient.from_url(cluster_url)
    await own_cluster.script_load(TAKE_SCRIPT)
    rpy = Redis.from_url(url, max_connections=50)
    rpy_cluster = RedisCluster.from_url(cluster_seed)
    await rpy_cluster.initialize()
    execute = rpy.execute_command
    clients: dict[str, Any] = {
        "own": (own, lambda: own.evalsha(TAKE_SCRIPT_SHA, 1, KEY, *ARGS)),
        "own-cluster": (own_cluster, lambda: own_cluster.evalsha(TAKE_SCRIPT_SHA, 1, KEY, *ARGS)),
        "redis-py": (rpy, lambda: rpy.evalsha(TAKE_SCRIPT_SHA, 1, KEY, *ARGS)),
        "redis-py-exec": (None, lambda: execute("EVALSHA", TAKE_SCRIPT_SHA, 1, KEY, *ARGS)),
        "redis-py-cluster": (
            rpy_cluster,
            lambda: rpy_cluster.evalsha(TAKE_SCRIPT_SHA, 1, KEY, *ARGS),
        ),
    }
    return clients


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    servers = _redis_server_module()
    with servers.RedisServer() as server, servers.RedisCluster() as cluster:
        first = cluster.nodes[0]
        clients = await make_clients(server.url, cluster.url, f"redis://{first.host}:{first.port}")
        rounds: dict[str, list[float]] = {name: [] for name in clients}
        try:
            for number in range(args.rounds):
                order = list(clients)
                shift = number % len(order)
                for name in order[shift:] + order[:shift]:
                    rounds[name].append(await cpu_per_call(clients[name][1], args.takes))
                print(f"  round {number + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        finally:
            for client, _ in clients.values():
                if client is not None:
                    await client.aclose()
    return {
        "benchmark": "redis-client",
        "setup": {
            "rounds": args.rounds,
            "takes_per_round": args.takes,
            "concurrency": CONCURRENCY,
            "event_loop": "uvloop",
            "redis_py": redis.__version__,
            "hiredis": HIREDIS_AVAILABLE,
        },
        "cpu_us_per_take": {
            name: {"median": statistics.median(values), "rounds": values}
            for name, values in rounds.items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench-redis-client.json"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--takes", type=int, default=8000, help="per round and client")
    args = parser.parse_args(argv)
    report = uvloop.run(bench(args))
    setup = report["setup"]
    print(
        f"CPU µs per take (EVALSHA), {setup['concurrency']} concurrent, uvloop, median of "
        f"{setup['rounds']} rounds x {setup['takes_per_round']}; redis-py "
        f"{setup['redis_py']}, hiredis {'yes' if setup['hiredis'] else 'no'}"
    )
    for name, result in report["cpu_us_per_take"].items():
        values = " ".join(f"{v:5.1f}" for v in result["rounds"])
        print(f"  {name:<18} {result['median']:6.1f}   [{values}]")
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
