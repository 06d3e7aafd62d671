"""What one lead deletion costs the store: a small timing, not a benchmark.

Starts its own SecantusDB, seeds a chatbot with ``--leads`` leads written through the
repository (so each has its ``lead.created`` and ``lead.updated`` events, and one in
three an Idempotency-Key result holding it), beside another chatbot whose ``--noise``
events fill the same collection (a delete must not read them). Then deletes ``--deletes``
of the leads one at a time, and ``--deletes`` more 25 at a time (a group commit's
batch), timing each call and the store process's CPU over the whole run; creates are
timed the same way (a deletion's bookkeeping must not make every write dearer).

    python scripts/time_delete.py [--leads 600 --deletes 150 --noise 20000]

Run it against two checkouts (``PYTHONPATH=<checkout>``) to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import secrets
import statistics
import sys
import time
from typing import Any

from bench_http import cpu_seconds  # scripts/ is first on sys.path
from own_store import report, run_on_own_store

from pollybot_leads.accounts.repository import AccountRepository
from pollybot_leads.idempotency.records import Lease, Receipt
from pollybot_leads.indexes import ensure_all_indexes
from pollybot_leads.leads.repository import LeadRepository
from pollybot_leads.leads.results import OneLead
from pollybot_leads.leads.writes import CREATE, LeadWrite
from pollybot_leads.store.client import Mongo
from pollybot_leads.timeutil import utcnow


def fields(n: int) -> dict[str, Any]:
    return {
        "name": f"Person {n:05d} Example",
        "email": f"person{n}@example.com",
        "phone": f"+1 555 {n:07d}",
        "status": "new",
        "metadata": {"utm_source": "google", "n": n},
    }


async def create(repo: LeadRepository, mongo: Mongo, chatbot: str, ws: str, n: int) -> str:
    """One create; one in three with an Idempotency-Key (its result holds the lead)."""
    if n % 3:
        return (await repo.create(chatbot_id=chatbot, workspace_id=ws, fields=fields(n)))["id"]
    rid = hashlib.sha256(secrets.token_bytes(16)).hexdigest()
    token = secrets.token_hex(8)
    await mongo.db["idempotency_keys"].insert_one(
        {"_id": rid, "fingerprint": "f", "state": "running", "token": token, "createdAt": utcnow()}
    )
    receipt = Receipt(Lease(rid, token), OneLead("timing"))
    (written,) = await repo.write(
        chatbot_id=chatbot,
        workspace_id=ws,
        writes=[LeadWrite(CREATE, fields(n))],
        receipt=receipt,
    )
    return str(written.lead["id"])  # type: ignore[union-attr]


def summary(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {
        "median_ms": round(statistics.median(times) * 1000, 2),
        "p90_ms": round(times[int(len(times) * 0.9)] * 1000, 2),
    }


async def run(uri: str, store_pid: int, args: argparse.Namespace) -> dict[str, Any]:
    mongo = Mongo(uri, "timing")
    await mongo.connect()
    await ensure_all_indexes(mongo)
    accounts = AccountRepository(mongo)
    repo = LeadRepository(mongo)
    ws = (await accounts.create_workspace(name="t"))["id"]
    chatbot = (await accounts.create_chatbot(workspace_id=ws, name="t"))["id"]
    other = (await accounts.create_chatbot(workspace_id=ws, name="noise"))["id"]
    noise = [
        {
            "_id": f"evt_{i:016x}",
            "chatbotId": other,
            "workspaceId": ws,
            "sequence": i + 1,
            "type": "lead.created",
            "createdAt": utcnow(),
            "data": {"lead": {"id": f"lead_{i:016x}", "name": "Noise", "email": "n@x.io"}},
        }
        for i in range(args.noise)
    ]
    for start in range(0, len(noise), 5000):
        await mongo.db["events"].insert_many(noise[start : start + 5000])
    lead_ids = []
    cpu0, creates = cpu_seconds([store_pid]), []
    for n in range(args.leads):
        began = time.perf_counter()
        lead_ids.append(await create(repo, mongo, chatbot, ws, n))
        creates.append(time.perf_counter() - began)
    create_cpu = (cpu_seconds([store_pid]) - cpu0) / args.leads
    for lead_id in lead_ids:  # a second event per lead
        await repo.update(
            chatbot_id=chatbot, lead_id=lead_id, changes={"status": "contacted"}, workspace_id=ws
        )
    audit = {"workspaceId": ws, "apiKeyId": "key_timing", "requestId": "timing"}

    async def delete(lead_id: str) -> float:
        began = time.perf_counter()
        await repo.delete(chatbot_id=chatbot, lead_id=lead_id, audit=audit, workspace_id=ws)
        return time.perf_counter() - began

    single = lead_ids[: args.deletes]
    cpu0 = cpu_seconds([store_pid])
    one_at_a_time = [await delete(lead_id) for lead_id in single]
    single_cpu = (cpu_seconds([store_pid]) - cpu0) / len(single)
    grouped_ids = lead_ids[args.deletes : 2 * args.deletes]
    cpu0, grouped = cpu_seconds([store_pid]), []
    for start in range(0, len(grouped_ids), 25):
        grouped += await asyncio.gather(*(delete(i) for i in grouped_ids[start : start + 25]))
    grouped_cpu = (cpu_seconds([store_pid]) - cpu0) / len(grouped_ids)
    await mongo.close()
    return {
        "leads": args.leads,
        "noise_events": args.noise,
        "create": {**summary(creates), "store_cpu_ms": round(create_cpu * 1000, 2)},
        "delete": {**summary(one_at_a_time), "store_cpu_ms": round(single_cpu * 1000, 2)},
        "delete_25_at_once": {
            **summary(grouped),
            "store_cpu_ms_per_delete": round(grouped_cpu * 1000, 2),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--leads", type=int, default=600)
    parser.add_argument("--deletes", type=int, default=150)
    parser.add_argument("--noise", type=int, default=20000)
    args = parser.parse_args()
    if 2 * args.deletes > args.leads:
        sys.exit("--deletes: at most half of --leads")
    result = run_on_own_store("time-delete-", lambda uri, pid: run(uri, pid, args))
    report(result)


if __name__ == "__main__":
    main()
