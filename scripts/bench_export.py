"""Export memory and speed: `make bench-export`.

Seeds one chatbot with 10,000 leads and another with 100,000 (bulk inserts of the
realistic leads bench_list.py makes, spread over a year), then exports each, in each
format, through HTTP from a fresh API server process (`serve`, one per export, so peaks
do not mix). The server's peak resident memory is the kernel's high-water mark
(VmHWM in /proc/<pid>/status) after the export, beside its resident memory before it
(after one warm-up list request). Flat memory means the 100,000-lead export's peak is
within 10 % of the 10,000-lead one's. Each export is checked complete (one line or row
per lead) and timed.

Without MONGODB_URI it starts its own SecantusDB in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout
from bench_list import BenchStore, seed  # the same realistic leads, a year of them

from pollybot_leads.accounts.repository import AccountRepository
from pollybot_leads.leads.repository import LeadRepository
from pollybot_leads.store.embedded import free_port, port_open

FLAT_WITHIN = 0.10


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in KiB (Linux)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(value.split()[0])
    return out


async def start_server(env: dict[str, str], port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [sys.executable, "-m", "pollybot_leads", "serve"], env=env, stdout=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while not port_open("127.0.0.1", port):
        if time.monotonic() > deadline or server.poll() is not None:
            raise SystemExit("the API server did not start")
        await asyncio.sleep(0.1)
    return server


async def export_once(
    env: dict[str, str], base: str, headers: dict[str, str], fmt: str, leads: int
) -> dict[str, Any]:
    port = free_port()
    server = await start_server({**env, "PORT": str(port)}, port)
    url = f"http://127.0.0.1:{port}{base}"
    try:
        async with ClientSession(timeout=ClientTimeout(total=3600)) as http:
            async with http.get(url, params={"limit": "100"}, headers=headers) as resp:
                assert resp.status == 200, await resp.text()  # warm-up: imports, pools
                await resp.read()
            before = memory_kib(server.pid)
            started = time.perf_counter()
            size = lines = 0
            async with http.get(url + "/export", params={"format": fmt}, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
                async for chunk in resp.content.iter_chunked(1 << 16):
                    size += len(chunk)
                    lines += chunk.count(b"\n")
            seconds = time.perf_counter() - started
            after = memory_kib(server.pid)
    finally:
        server.terminate()
        server.wait(30)
    rows = lines - (1 if fmt == "csv" else 0)  # the CSV header row
    assert rows == leads, f"{fmt}: {rows} rows for {leads} leads"
    return {
        "format": fmt,
        "leads": leads,
        "seconds": round(seconds, 2),
        "leads_per_second": round(leads / seconds),
        "megabytes": round(size / 1e6, 1),
        "rss_before_mib": round(before["VmRSS"] / 1024, 1),
        "peak_rss_mib": round(after["VmHWM"] / 1024, 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--formats", default="ndjson,csv")
    parser.add_argument("--out", default="bench-export.json")
    parser.add_argument(
        "--cache-size",
        default="6G",
        help="SecantusDB's WiredTiger cache (its 1G default stalls inserts past ~30k leads)",
    )
    args = parser.parse_args()
    formats = args.formats.split(",")

    bench = await BenchStore.open(args.cache_size)
    mongo, uri, database = bench.mongo, bench.uri, bench.database
    results = []
    try:
        accounts, repo = AccountRepository(mongo), LeadRepository(mongo)
        ws = await accounts.create_workspace(name="Bench")
        small = await accounts.create_chatbot(workspace_id=ws["id"], name="Small bot")
        large = await accounts.create_chatbot(workspace_id=ws["id"], name="Large bot")
        key = await accounts.create_key(
            workspace_id=ws["id"], rate_limit_capacity=10**9, rate_limit_refill=10**9
        )
        targets = [(small["id"], ws["id"], args.small), (large["id"], ws["id"], args.large)]
        print(f"seeding {args.small:,} + {args.large:,} leads ...", flush=True)
        seed_seconds = await seed(repo, targets, 11)

        env = {
            **os.environ,
            "MONGODB_URI": uri,
            "MONGODB_DATABASE": database,
            "LOG_LEVEL": "WARNING",
            "CURSOR_SECRET": "bench-cursor-secret",
        }
        env.pop("REDIS_URL", None)
        headers = {"Authorization": f"Bearer {key.secret}"}
        for fmt in formats:
            for bot, leads in ((small, args.small), (large, args.large)):
                base = f"/api/v1/chatbots/{bot['id']}/leads"
                row = await export_once(env, base, headers, fmt, leads)
                results.append(row)
                print(
                    f"  {fmt:6} {leads:>8,} leads  {row['seconds']:7.1f} s  "
                    f"{row['leads_per_second']:>7,}/s  {row['megabytes']:6.1f} MB  "
                    f"RSS before {row['rss_before_mib']:6.1f} MiB  "
                    f"peak {row['peak_rss_mib']:6.1f} MiB",
                    flush=True,
                )
    finally:
        await bench.close()

    print()
    flat = {}
    for fmt in formats:
        by_size = {row["leads"]: row for row in results if row["format"] == fmt}
        ratio = by_size[args.large]["peak_rss_mib"] / by_size[args.small]["peak_rss_mib"]
        flat[fmt] = {"peak_ratio": round(ratio, 3), "flat": abs(ratio - 1) <= FLAT_WITHIN}
        print(
            f"{fmt}: peak RSS exporting {args.large:,} leads is {ratio:.3f}x that of "
            f"{args.small:,} ({'within' if flat[fmt]['flat'] else 'NOT within'} "
            f"{FLAT_WITHIN:.0%})"
        )
    report = {
        "store": "MONGODB_URI" if os.environ.get("MONGODB_URI") else "embedded SecantusDB",
        "driver": os.environ.get("MONGODB_DRIVER", "pymongo"),
        "seed_seconds": round(seed_seconds, 1),
        "results": results,
        "flat": flat,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
