"""Batches against single creates, and the cost of an Idempotency-Key: `make bench-batch`.

Self-contained like scripts/bench_http.py, whose helpers it reuses: starts its own
SecantusDB (unless MONGODB_URI is set: then a database of its own there, dropped at the
end), seeds a workspace, a chatbot holding ``--leads`` leads and an API key whose bucket
never runs dry, and starts the real server (``python -m pollybot_leads serve``) against it.
Then, side by side in every round (the order rotates from round to round, so that a noisy
machine affects all alike), each scenario writes ``--units`` x 100 leads:

* ``single``      - 100 single ``POST …/leads``, one after another;
* ``single-c16``  - 100 single POSTs from 16 concurrent clients;
* ``single-key``  - as ``single``, each POST with a fresh ``Idempotency-Key``;
* ``batch``       - one ``POST …/leads/batch`` of 100 new leads;
* ``batch-upsert``- one batch of 100 with ``"upsert": "email"``, every email an existing
  lead's (each item changes its lead's metadata, so every one is a real update).

Per scenario and round: leads/s (leads written over the wall time from the first request
to the last response; a 2xx write is durable), and the CPU the server process and the
store process spent per lead, from utime+stime in /proc/<pid>/stat until both are idle
again. Medians over rounds, and the ratios the issue asks for: per-lead store work of a
batch over that of single creates (target <= 1.5), and server and store CPU per create
with over without an Idempotency-Key. Printed, and written round by round to ``--out``.
It reports and does not gate: the exit status is 0 whether the target is met or not.

    python scripts/bench_batch.py --out bench-batch.json [--rounds 5 --units 5 --leads 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

# scripts/ is first on sys.path when this file runs as a script.
from bench_http import (
    CLOCK_TICKS,
    cpu_seconds,
    drop_database,
    fmt,
    process_tree,
    quiet_seconds,
    seed,
    start_server,
    stop_server,
    wait_until_idle,
    wait_until_listening,
)
from pymongo import MongoClient

from pollybot_leads.store.embedded import EmbeddedStore, free_port

BATCH = 100  # leads per unit: 100 single POSTs, or one batch of 100
CONCURRENCY = 16
SCENARIOS = ("single", "single-c16", "single-key", "batch", "batch-upsert")
# (name, numerator scenario, denominator scenario, metric, aim)
TARGETS = (("batch store work per lead over single", "batch", "single", "store", 1.5),)
RATIOS = (
    ("batch / single", "batch", "single"),
    ("batch / single-c16", "batch", "single-c16"),
    ("batch-upsert / single", "batch-upsert", "single"),
    ("single-key / single", "single-key", "single"),
)


def lead_body(tag: str) -> dict[str, Any]:
    return {
        "name": f"Bench Lead {tag}",
        "email": f"bench.{tag}@example.com",
        "source": "bench",
        "metadata": {"utm_source": "bench", "tag": tag},
    }


class Client:
    """The requests of every scenario, over one keep-alive session (``CONCURRENCY``
    connections); each call checks its answer and counts what was written."""

    def __init__(self, session: aiohttp.ClientSession, base: str, emails: list[str]) -> None:
        self.session, self.base, self.emails = session, base, emails
        self.statuses: Counter[int] = Counter()
        self.upserts = 0
        self.errors: list[dict[str, Any]] = []  # the first few failures' answers

    async def _post(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
        async with self.session.post(url, json=body, headers=headers) as resp:
            payload = await resp.json()
            self.statuses[resp.status] += 1
            if resp.status >= 300 and len(self.errors) < 10:
                self.errors.append({"status": resp.status, "body": payload})
            return resp.status, payload

    async def singles(self, concurrency: int, keyed: bool) -> int:
        tags = [uuid.uuid4().hex for _ in range(BATCH)]
        written = 0

        async def worker() -> None:
            nonlocal written
            while tags:
                tag = tags.pop()
                headers = {"Idempotency-Key": uuid.uuid4().hex} if keyed else {}
                status, _ = await self._post(self.base, lead_body(tag), headers)
                written += status == 201

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return written

    async def batch(self, upsert: bool) -> int:
        if upsert:
            start = self.upserts * BATCH % len(self.emails)
            self.upserts += 1
            tag = uuid.uuid4().hex
            items = [
                {"name": "Bench Upsert", "email": email.upper(), "metadata": {"tag": tag}}
                for email in (self.emails * 2)[start : start + BATCH]
            ]
            body: dict[str, Any] = {"leads": items, "upsert": "email"}
        else:
            body = {"leads": [lead_body(uuid.uuid4().hex) for _ in range(BATCH)]}
        status, payload = await self._post(self.base + "/batch", body, {})
        if status != 200:
            return 0
        data = payload["data"]
        return int(data["updated"] if upsert else data["created"])

    def scenario(self, name: str) -> Callable[[], Awaitable[int]]:
        return {
            "single": lambda: self.singles(1, keyed=False),
            "single-c16": lambda: self.singles(CONCURRENCY, keyed=False),
            "single-key": lambda: self.singles(1, keyed=True),
            "batch": lambda: self.batch(upsert=False),
            "batch-upsert": lambda: self.batch(upsert=True),
        }[name]


async def measure(
    client: Client, name: str, units: int, server_pids: list[int], store_pid: int | None
) -> dict[str, Any]:
    """One timed round of one scenario: ``units`` x 100 leads."""
    store_pids = process_tree(store_pid) if store_pid else []
    server_cpu, store_cpu = cpu_seconds(server_pids), cpu_seconds(store_pids)
    failures_before = sum(n for s, n in client.statuses.items() if s >= 300)
    run = client.scenario(name)
    started = time.perf_counter()
    written = 0
    for _ in range(units):
        written += await run()
    wall = time.perf_counter() - started
    # A 2xx is sent after the commit: only stray ticks can follow. Wait them out.
    await asyncio.to_thread(wait_until_idle, server_pids + store_pids, quiet_seconds(store_pid))
    server_cpu = cpu_seconds(server_pids) - server_cpu
    store = cpu_seconds(store_pids) - store_cpu if store_pid else None
    leads = units * BATCH
    return {
        "leads": leads,
        "written": written,
        "failed_responses": sum(n for s, n in client.statuses.items() if s >= 300)
        - failures_before,
        "wall_seconds": round(wall, 4),
        "leads_per_second": written / wall if wall else None,
        "server_cpu_us_per_lead": server_cpu * 1e6 / leads,
        "store_cpu_us_per_lead": store * 1e6 / leads if store is not None else None,
    }


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


METRICS = ("leads_per_second", "server_cpu_us_per_lead", "store_cpu_us_per_lead")


def summarise(rounds: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, done in rounds.items():
        results[name] = {key: median([r[key] for r in done]) for key in METRICS}
        results[name]["written"] = sum(r["written"] for r in done)
        results[name]["leads"] = sum(r["leads"] for r in done)
        results[name]["failed_responses"] = sum(r["failed_responses"] for r in done)
    return results


def ratios(results: dict[str, Any], rounds: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, top, bottom in RATIOS:
        row: dict[str, Any] = {}
        for metric in ("server", "store"):
            key = f"{metric}_cpu_us_per_lead"
            row[metric] = ratio(results[top][key], results[bottom][key])
            # Same-round pairs: least disturbed by drift on a shared machine.
            row[f"{metric}_paired"] = median(
                [ratio(a[key], b[key]) for a, b in zip(rounds[top], rounds[bottom], strict=True)]
            )
        row["leads_per_second"] = ratio(
            results[top]["leads_per_second"], results[bottom]["leads_per_second"]
        )
        out[label] = row
    return out


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for label, top, bottom, metric, aim in TARGETS:
        key = f"{metric}_cpu_us_per_lead"
        value = ratio(results[top][key], results[bottom][key])
        met = value is not None and value <= aim
        out.append({"target": label, "aim": f"<= {aim}", "value": value, "met": met})
    return out


def render(report: dict[str, Any]) -> str:
    setup, results = report["setup"], report["results"]
    lines = [
        f"Batch benchmark: {setup['rounds']} rounds x {setup['units']} x {BATCH} leads per "
        f"scenario, order rotating; {setup['leads']:,} leads in the chatbot; {setup['store']}; "
        f"{report['machine']['nproc']} CPUs; medians over rounds. leads/s: leads written per "
        "second of wall time; µs/lead: CPU per lead",
        "",
        f"{'scenario':<13} {'leads/s':>8} {'server µs/lead':>15} {'store µs/lead':>14} "
        f"{'unwritten':>9}",
    ]
    lines.append("-" * len(lines[-1]))
    for name in SCENARIOS:
        row = results[name]
        lines.append(
            f"{name:<13} {fmt(row['leads_per_second'], '8.0f')} "
            f"{fmt(row['server_cpu_us_per_lead'], '15.0f')} "
            f"{fmt(row['store_cpu_us_per_lead'], '14.0f')} "
            f"{row['leads'] - row['written']:>9}"
        )
    lines += ["", "Ratios (of medians; same-round paired medians in brackets):"]
    for label, row in report["ratios"].items():
        lines.append(
            f"  {label:<22} server {fmt(row['server'], '.2f')} "
            f"[{fmt(row['server_paired'], '.2f')}]  store {fmt(row['store'], '.2f')} "
            f"[{fmt(row['store_paired'], '.2f')}]  leads/s {fmt(row['leads_per_second'], '.2f')}"
        )
    lines += ["", "Targets:"]
    for verdict in report["targets"]:
        lines.append(
            f"  {verdict['target']:<40} {verdict['aim']:<7} measured "
            f"{fmt(verdict['value'], '.2f')}  {'met' if verdict['met'] else 'MISSED'}"
        )
    if report["failed"]:
        lines += ["", f"WARNING: {report['failed']} leads not written; the first answers:"]
        lines += [f"  {json.dumps(failure)[:300]}" for failure in report["failures"][:3]]
    return "\n".join(lines)


async def drive(
    args: argparse.Namespace, port: int, base: str, key: str, emails: list[str], pids: Any
) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    """Every scenario's rounds, and the first few failed requests' answers."""
    server_pid, store_pid = pids
    server_pids = process_tree(server_pid)
    headers = {"Authorization": f"Bearer {key}"}
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in SCENARIOS}
    async with aiohttp.ClientSession(
        f"http://127.0.0.1:{port}", connector=connector, headers=headers
    ) as session:
        client = Client(session, base, emails)
        for name in SCENARIOS:  # connections, caches, first-time imports: never timed
            if await client.scenario(name)() != BATCH:
                print(f"WARNING: warm-up of {name} failed: {client.errors[-1:]}", file=sys.stderr)
        for number in range(args.rounds):
            order = SCENARIOS[number % len(SCENARIOS) :] + SCENARIOS[: number % len(SCENARIOS)]
            for name in order:
                result = await measure(client, name, args.units, server_pids, store_pid)
                result["round"] = number + 1
                rounds[name].append(result)
                print(
                    f"  round {number + 1}/{args.rounds} {name:<13} "
                    f"{fmt(result['leads_per_second'], '6.0f')} leads/s  server "
                    f"{fmt(result['server_cpu_us_per_lead'], '6.0f')} µs/lead  store "
                    f"{fmt(result['store_cpu_us_per_lead'], '6.0f')} µs/lead  "
                    f"written {result['written']}/{result['leads']}",
                    file=sys.stderr,
                    flush=True,
                )
    return rounds, client.errors


def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    store = server = None
    uri = os.environ.get("MONGODB_URI")
    database = f"bench_batch_{secrets.token_hex(4)}"
    load_before = os.getloadavg()
    try:
        if not uri:
            store = EmbeddedStore(workdir / "secantusdb", free_port(), cache_size="4G")
            store.start()
            uri = store.uri
        print(f"seeding {args.leads:,} leads ...", file=sys.stderr, flush=True)
        tenant = asyncio.run(seed(uri, database, args.leads, args.leads))
        with MongoClient(uri) as client:
            emails = [
                doc["email"]
                for doc in client[database]["leads"].find(
                    {"chatbotId": tenant["chatbot"]}, {"email": 1}
                )
            ]
        server_args = argparse.Namespace(api_driver=args.api_driver, workers=1)
        server = start_server("api", workdir, uri, database, tenant["key"], server_args)
        wait_until_listening(server)
        base = f"/api/v1/chatbots/{tenant['chatbot']}/leads"
        store_pid = store.process.pid if store and store.process else None
        started = time.perf_counter()
        rounds, client_errors = asyncio.run(
            drive(args, server.port, base, tenant["key"], emails, (server.process.pid, store_pid))
        )
        measured_seconds = time.perf_counter() - started
        log_tail = server.log_tail()
    finally:
        if server is not None:
            stop_server(server)
        if store is not None:
            store.stop()
        elif uri:
            drop_database(uri, database)

    results = summarise(rounds)
    failed = sum(r["leads"] - r["written"] for r in results.values())
    return {
        "benchmark": "batch",
        "scenarios": {
            "single": f"{BATCH} POST …/leads, sequential (one client)",
            "single-c16": f"{BATCH} POST …/leads from {CONCURRENCY} concurrent clients",
            "single-key": f"{BATCH} POST …/leads, sequential, each with a fresh Idempotency-Key",
            "batch": f"one POST …/leads/batch of {BATCH} new leads",
            "batch-upsert": f'one POST …/leads/batch of {BATCH} with "upsert": "email", '
            "every email an existing lead's (each item changes its metadata)",
        },
        "setup": {
            "rounds": args.rounds,
            "units": args.units,
            "leads_per_unit": BATCH,
            "leads": args.leads,
            "measured_seconds": round(measured_seconds, 1),
            "store": "MONGODB_URI" if store is None else "embedded SecantusDB (cache 4G)",
            "api_driver": args.api_driver or "default",
            "api_rate_limit": "in-process bucket (no REDIS_URL), key capacity 10**9",
            "client": f"aiohttp in the benchmark process, {CONCURRENCY} keep-alive connections",
        },
        "machine": {
            "nproc": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "notes": {
            "leads_per_second": "leads written (201s; for batches the results' created or "
            "updated count) over the wall time from the first request to the last response",
            "server_cpu_us_per_lead": "utime+stime of the server process and its "
            f"descendants (/proc/<pid>/stat, {CLOCK_TICKS} ticks/s) over the round, until "
            "server and store were idle again, divided by the leads sent",
            "store_cpu_us_per_lead": "the same for the SecantusDB process; null when "
            "MONGODB_URI points elsewhere",
            "ratios": "of the medians; *_paired is the median of same-round ratios",
        },
        "results": results,
        "ratios": ratios(results, rounds),
        "targets": verdicts(results),
        "failed": failed,
        "failures": client_errors,
        "rounds": rounds,
        "server_log_tail": log_tail,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench-batch.json"))
    parser.add_argument("--rounds", type=int, default=5, help="per scenario")
    parser.add_argument("--units", type=int, default=5, help=f"x {BATCH} leads per round")
    parser.add_argument("--leads", type=int, default=2000, help="seeded: the upserts' emails")
    parser.add_argument("--api-driver", choices=("motor", "pymongo"), help="MONGODB_DRIVER")
    args = parser.parse_args(argv)
    if min(args.rounds, args.units) < 1 or args.leads < BATCH:
        parser.error(f"rounds and units must be at least 1, leads at least {BATCH}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        with tempfile.TemporaryDirectory(prefix="pb-bench-batch-") as tmp:
            report = bench(args, Path(tmp))
    except KeyboardInterrupt:
        print("\ninterrupted: server and store stopped", file=sys.stderr)
        return 130
    print(render(report))
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
