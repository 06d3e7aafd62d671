"""Time and peak memory of `admin dump` and `admin restore` for 100,000 leads.

Seeds one chatbot with 100,000 realistic leads (bench_list.py's, bulk inserted, then
recounted) and one `lead.created` event each (as the API would have written them, so
the dump holds the events too), in an embedded SecantusDB of its own. Then runs, as
subprocesses, `pollybot-leads admin dump --out DIR` against it and `pollybot-leads
admin restore --from DIR` into a second, empty SecantusDB, and reports each one's wall
time and peak resident memory (``ru_maxrss`` of that child, from ``os.wait4``), beside
the size of the dump. Not part of the test suite: run it by hand (docs/operations.md).

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
import time
from pathlib import Path
from typing import Any

from bench_list import BenchStore, seed  # the same realistic leads

from pollybot_leads.accounts.repository import AccountRepository
from pollybot_leads.leads.documents import to_lead
from pollybot_leads.leads.repository import LeadRepository
from pollybot_leads.store.embedded import EmbeddedStore, free_port

CACHE_SIZE = "4G"  # the embedded store's own setting ([embedded] cache_size)


async def seed_events(bench: BenchStore, chatbot_id: str, workspace_id: str) -> int:
    """One lead.created event per lead, numbered 1..n, and the chatbot's sequence."""
    db = bench.mongo.db
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
                "createdAt": doc["createdAt"],
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


def run_measured(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run the command; its summary, wall time and peak RSS (its own, not the store's)."""
    began = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pollybot_leads", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()  # small: one JSON line, no tty
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - began
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}): {out!r} {err!r}")
    return {
        "command": "pollybot-leads " + " ".join(args),
        "seconds": round(seconds, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # KiB on Linux
        "summary": json.loads(out),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--out", help="write the figures here as JSON too")
    args = parser.parse_args()

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
        dumped = run_measured(["admin", "dump", "--out", str(out)], source)
        size = sum(f.stat().st_size for f in out.iterdir())
        print(
            f"dump:    {dumped['seconds']:6.1f} s  peak RSS {dumped['peak_rss_mib']:6.1f} MiB  "
            f"{size / 2**20:.1f} MiB on disk",
            flush=True,
        )
        target.start()
        restored = run_measured(
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
        target.discard()
        await bench.close()
        work.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
