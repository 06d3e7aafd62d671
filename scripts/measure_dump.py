"""Time and peak memory of `admin dump` and `admin restore` for 100,000 leads.

Seeds one chatbot with 100,000 realistic leads (bench_list.py's, bulk inserted, then
recounted) and one `lead.created` event each (as the API would have written them, so
the dump holds the events too), in an embedded SecantusDB of its own. Then runs, as
subprocesses, `pollybot-leads admin dump --out DIR` against it and `pollybot-leads
admin restore --from DIR` into a second, empty SecantusDB, and reports each one's wall
time and peak resident memory (``getrusage`` ``ru_maxrss`` of that command, taken by a
small launcher process: see LAUNCHER), beside the size of the dump. Not part of the
test suite: run it by hand (docs/benchmarks.md).

    nice -n 19 .venv/bin/python scripts/measure_dump.py [--leads 100000] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench_list import BenchStore, seed  # the same realistic leads

from pollybot_leads.accounts.repository import AccountRepository
from pollybot_leads.leads.documents import to_lead
from pollybot_leads.leads.repository import LeadRepository
from pollybot_leads.store.embedded import EmbeddedStore, free_port
from pollybot_leads.timeutil import utcnow

CACHE_SIZE = "4G"  # the embedded store's own setting ([embedded] cache_size)


async def seed_events(bench: BenchStore, chatbot_id: str, workspace_id: str) -> int:
    """One lead.created event per lead, numbered 1..n, and the chatbot's sequence. Their
    time is now, as for leads imported today (older ones the store would expire, and
    its expiry of 100,000 events would run through the measurement)."""
    db = bench.mongo.db
    now = utcnow()
    sequence, batch = 0, []
    async for doc in db["leads"].find({"chatbotId": chatbot_id}, sort=[("createdAt", 1)]):
        sequence += 1
        batch.append(
            {
                "_id": f"evt_{sequence:016x}",
                "chatbotId": chatbot_id,
                "workspaceId": workspace_id,
                "sequence": sequence,
                "type": "lead.created",
                "createdAt": now,
                "data": {"lead": to_lead(doc)},
            }
        )
        if len(batch) == 1000:
            await db["events"].insert_many(batch)
            batch = []
    if batch:
        await db["events"].insert_many(batch)
    await db["event_sequences"].insert_one({"_id": chatbot_id, "last": sequence})
    return sequence


# Runs one command and reports its wall time and getrusage(RUSAGE_CHILDREN).ru_maxrss.
# Started before the seeding, while small: a child's ru_maxrss counts the memory of the
# process it was forked from (Linux keeps the high-water mark across exec), so a command
# forked from this script after it seeded 100,000 leads would report this script's size.
LAUNCHER = """
import json, os, resource, subprocess, sys, time
job = json.loads(sys.stdin.readline())
began = time.perf_counter()
done = subprocess.run(job["argv"], env=job["env"], capture_output=True)
print(json.dumps({
    "code": done.returncode,
    "stdout": done.stdout.decode(),
    "stderr": done.stderr.decode()[-2000:],
    "seconds": time.perf_counter() - began,
    "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
}))
"""


def launcher() -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", LAUNCHER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def run_measured(
    via: subprocess.Popen[str], args: list[str], env: dict[str, str]
) -> dict[str, Any]:
    """Run the command through ``via``; its summary, wall time and peak RSS."""
    job = {"argv": [sys.executable, "-m", "pollybot_leads", *args], "env": env}
    out, _ = via.communicate(json.dumps(job) + "\n")
    result = json.loads(out)
    if result["code"] != 0:
        raise SystemExit(f"{' '.join(args)} failed ({result['code']}): {result}")
    return {
        "command": "pollybot-leads " + " ".join(args),
        "seconds": round(result["seconds"], 1),
        "peak_rss_mib": round(result["maxrss_kib"] / 1024, 1),  # KiB on Linux
        "summary": json.loads(result["stdout"]),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--out", help="write the figures here as JSON too")
    args = parser.parse_args()

    for_dump, for_restore = launcher(), launcher()  # while this process is small
    bench = await BenchStore.open(CACHE_SIZE)
    work = tempfile.TemporaryDirectory(prefix="pollybot-dump-")
    target = EmbeddedStore(Path(work.name) / "target", free_port(), cache_size=CACHE_SIZE)
    try:
        accounts, repo = AccountRepository(bench.mongo), LeadRepository(bench.mongo)
        ws = await accounts.create_workspace(name="Dump")
        bot = await accounts.create_chatbot(workspace_id=ws["id"], name="Dump bot")
        await accounts.create_key(workspace_id=ws["id"], name="dump")
        print(f"seeding {args.leads:,} leads and their events ...", flush=True)
        seed_seconds = await seed(repo, [(bot["id"], ws["id"], args.leads)], 20)
        events = await seed_events(bench, bot["id"], ws["id"])
        print(f"seeded in {seed_seconds:.0f} s (+ {events:,} events)", flush=True)

        env = {**os.environ, "LOG_LEVEL": "WARNING"}
        env.pop("REDIS_URL", None)
        source = {**env, "MONGODB_URI": bench.uri, "MONGODB_DATABASE": bench.database}
        out = Path(work.name) / "dump"
        dumped = run_measured(for_dump, ["admin", "dump", "--out", str(out)], source)
        size = sum(f.stat().st_size for f in out.iterdir())
        print(
            f"dump:    {dumped['seconds']:6.1f} s  peak RSS {dumped['peak_rss_mib']:6.1f} MiB  "
            f"{size / 2**20:.1f} MiB on disk",
            flush=True,
        )
        target.start()
        restored = run_measured(
            for_restore,
            ["admin", "restore", "--from", str(out)],
            {**env, "MONGODB_URI": target.uri, "MONGODB_DATABASE": "restored"},
        )
        print(
            f"restore: {restored['seconds']:6.1f} s  peak RSS {restored['peak_rss_mib']:6.1f} MiB",
            flush=True,
        )
        assert restored["summary"]["collections"] == dumped["summary"]["collections"]
        report = {
            "leads": args.leads,
            "events": events,
            "store": "embedded SecantusDB (each side its own process)",
            "dump_bytes": size,
            "dump": dumped,
            "restore": restored,
        }
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
            print(f"wrote {args.out}")
    finally:
        for via in (for_dump, for_restore):
            if via.poll() is None:
                via.kill()
                via.wait()
        target.discard()
        await bench.close()
        work.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
