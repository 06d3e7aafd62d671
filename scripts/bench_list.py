"""List latency at scale: `make bench-list`.

Seeds 100,000 leads into one chatbot and 50,000 over ten others (bulk inserts of
realistic leads), serves the API from a separate process, and measures through HTTP the
p50/p95 latency of the list queries integrations run all day. Beside each HTTP figure it
measures the same query as a direct repository call in this process (the driver's find
and count, no HTTP), so the ratio shows what the API adds on top of the store. The index
each query used comes from the server's own explain.

Without MONGODB_URI it starts its own SecantusDB in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import ClientSession
from multidict import MultiDict

from pollybot_leads.accounts.repository import AccountRepository
from pollybot_leads.errors import AppError
from pollybot_leads.indexes import ensure_all_indexes
from pollybot_leads.leads.documents import build_lead_document
from pollybot_leads.leads.query import CursorCodec, parse_list_query
from pollybot_leads.leads.repository import LeadRepository
from pollybot_leads.leads.rules import STATUSES
from pollybot_leads.settings import load_settings
from pollybot_leads.store.client import Mongo, store_deadline
from pollybot_leads.store.embedded import EmbeddedStore, free_port, port_open

# A shape answered 503 (past the store budget) this many times in a row is not run again.
GIVE_UP_AFTER = 3
FIRST = [
    "John",
    "Mary",
    "José",
    "Zoë",
    "Ahmed",
    "Li",
    "Anna",
    "Jonas",
    "Chloé",
    "Mateo",
    "Priya",
    "Olga",
    "Sven",
    "Aïsha",
    "Noah",
    "Emma",
    "Lucas",
    "Sofia",
    "Yuki",
    "Omar",
    "Joanna",
    "Björn",
    "Renée",
    "Diego",
    "Fatima",
    "Liam",
    "Maya",
    "Ivan",
    "Léa",
    "Kofi",
]
LAST = [
    "Doe",
    "Smith",
    "García",
    "Müller",
    "Jones",
    "Nguyen",
    "Rossi",
    "Kowalski",
    "Dubois",
    "Johansson",
    "Kim",
    "Silva",
    "O'Brien",
    "Novák",
    "Haddad",
    "Tanaka",
    "Okafor",
    "Brown",
    "Martínez",
    "Schmidt",
    "Fischer",
    "López",
    "Wilson",
    "Andersen",
    "Costa",
    "Meyer",
]
DOMAINS = [
    "example.com",
    "gmail.com",
    "acme.io",
    "jones.io",
    "outlook.com",
    "corp.example",
    "startup.dev",
    "mail.de",
    "yahoo.fr",
    "company.co.uk",
]
SOURCES = ["website", "facebook", "google_ads", "referral", "linkedin", "chat_widget"]
STATUS_WEIGHTS = [40, 20, 15, 10, 10, 5]
PLANS = ["free", "starter", "pro", "enterprise"]


def fake_lead(rng: random.Random, i: int, now: datetime) -> tuple[dict[str, Any], datetime]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    sep = rng.choice([".", "_", "-", ""])
    local = f"{first}{sep}{last}".lower().replace("'", "")
    email = f"{local}{i}@{rng.choice(DOMAINS)}"
    phone = f"+1-555-{rng.randrange(1000):03d}-{rng.randrange(10000):04d}"
    fields = {
        "name": f"{first} {last}",
        "email": email,
        # Lead 21's phone is known: the phone filter below finds it, written another way.
        "phone": "+1-555-210-0021" if i == 21 else phone,
        "external_id": f"crm-{i}",
        "source": rng.choice(SOURCES),
        "status": rng.choices(STATUSES, STATUS_WEIGHTS)[0],
        "metadata": {
            "utm_source": rng.choice(["google", "bing", "newsletter", "direct"]),
            "plan": rng.choices(PLANS, [50, 30, 15, 5])[0],
            "seats": rng.randrange(1, 200),
            "interests": rng.sample(["product_a", "product_b", "pricing", "demo"], 2),
            "trial": rng.random() < 0.2,
        },
    }
    created = now - timedelta(seconds=rng.uniform(0, 365 * 86400))
    return fields, created


async def seed(
    repo: LeadRepository, targets: list[tuple[str, str, int]], seed_value: int, batch: int = 1000
) -> float:
    rng = random.Random(seed_value)
    now = datetime.now(UTC).replace(microsecond=0)
    started = time.perf_counter()
    done = 0
    for chatbot_id, workspace_id, count in targets:
        for offset in range(0, count, batch):
            docs = []
            for i in range(offset, min(count, offset + batch)):
                fields, created = fake_lead(rng, i, now)
                doc = build_lead_document(chatbot_id, workspace_id, fields, created)
                updated = created + timedelta(seconds=rng.uniform(0, 30 * 86400))
                doc["updatedAt"] = min(updated, now)  # never ahead of the clock
                docs.append(doc)
            done += await repo.insert_many(docs=docs)
            if done % 10000 == 0:
                rate = done / (time.perf_counter() - started)
                print(f"  seeded {done:,} leads ({rate:,.0f}/s)", flush=True)
    seconds = time.perf_counter() - started
    for chatbot_id, _, _ in targets:  # a bulk load bypasses the per-chatbot lead counters
        await repo.recount(chatbot_id=chatbot_id)
    print(f"seeded {done:,} in {seconds:.0f} s ({done / seconds:,.0f}/s)", flush=True)
    return seconds


class BenchStore:
    """A database of the benchmark's own, connected and indexed: on MONGODB_URI's server
    (dropped by close), else in an embedded SecantusDB in a temporary directory (deleted
    with it by close)."""

    def __init__(self, cache_size: str) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="pollybot-bench-")
        self._store: EmbeddedStore | None = None
        uri = os.environ.get("MONGODB_URI")
        if not uri:
            self._store = EmbeddedStore(Path(self._tmp.name), free_port(), cache_size=cache_size)
            self._store.start()
            uri = self._store.uri
        self.uri = uri
        self.database = f"pollybot_bench_{random.randrange(16**6):06x}"
        self.mongo = Mongo(uri, self.database, os.environ.get("MONGODB_DRIVER", "pymongo"))

    @classmethod
    async def open(cls, cache_size: str) -> BenchStore:
        bench = cls(cache_size)
        try:
            await bench.mongo.connect()
            await ensure_all_indexes(bench.mongo)
        except BaseException:
            await bench.close()
            raise
        return bench

    async def close(self) -> None:
        if self._store is None:  # an embedded store goes with its directory
            await self.mongo.client.drop_database(self.database)
        await self.mongo.close()
        if self._store is not None:
            self._store.stop()
        self._tmp.cleanup()


def fmt(value: Any) -> str:
    return "-" if value is None else str(value)  # no count: every run was refused


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def index_used(plan: dict[str, Any]) -> str:
    names: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("stage") == "COLLSCAN":
                names.append("COLLSCAN")
            if node.get("stage") == "IXSCAN":
                names.append(node.get("indexName", "?"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(plan.get("queryPlanner", plan))
    return ",".join(dict.fromkeys(names)) or "?"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--others", type=int, default=50_000)
    parser.add_argument("--reps", type=int, default=15, help="timed runs per query")
    parser.add_argument("--out", default="bench-list.json")
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="also serve the code in DIR (another checkout, e.g. the main branch) on the "
        "same data, and time each query against both, alternately, in the same run",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="TEXT",
        help="run only the shapes whose label contains TEXT (repeatable)",
    )
    parser.add_argument(
        "--cache-size",
        default="6G",
        help="SecantusDB's WiredTiger cache (its 1G default stalls inserts past ~30k leads)",
    )
    args = parser.parse_args()

    bench = await BenchStore.open(args.cache_size)
    mongo, uri, database = bench.mongo, bench.uri, bench.database
    servers: list[subprocess.Popen[bytes]] = []
    try:
        accounts, repo = AccountRepository(mongo), LeadRepository(mongo)
        ws = await accounts.create_workspace(name="Bench")
        main_bot = await accounts.create_chatbot(workspace_id=ws["id"], name="Busy bot")
        others = [
            await accounts.create_chatbot(workspace_id=ws["id"], name=f"Bot {i}") for i in range(10)
        ]
        key = await accounts.create_key(
            workspace_id=ws["id"], rate_limit_capacity=10**9, rate_limit_refill=10**9
        )
        targets = [(main_bot["id"], ws["id"], args.leads)] + [
            (bot["id"], ws["id"], args.others // len(others)) for bot in others
        ]
        print(f"seeding {args.leads:,} + {args.others:,} leads ...", flush=True)
        seed_seconds = await seed(repo, targets, 7)

        port = free_port()
        secret = "bench-cursor-secret"
        env = {
            **os.environ,
            "MONGODB_URI": uri,
            "MONGODB_DATABASE": database,
            "PORT": str(port),
            "LOG_LEVEL": "WARNING",
            "CURSOR_SECRET": secret,
        }
        env.pop("REDIS_URL", None)
        server = subprocess.Popen(
            [sys.executable, "-m", "pollybot_leads", "serve"], env=env, stdout=subprocess.DEVNULL
        )
        servers.append(server)
        baseline_port = free_port()
        if args.baseline:
            baseline_env = {**env, "PORT": str(baseline_port), "PYTHONPATH": args.baseline}
            servers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "pollybot_leads", "serve"],
                    env=baseline_env,
                    stdout=subprocess.DEVNULL,
                    cwd=args.baseline,
                )
            )
        deadline = time.monotonic() + 60
        for each, each_port in zip(servers, (port, baseline_port), strict=False):
            while not port_open("127.0.0.1", each_port):
                if time.monotonic() > deadline or each.poll() is not None:
                    raise SystemExit("an API server did not start")
                await asyncio.sleep(0.1)

        base = f"http://127.0.0.1:{port}/api/v1/chatbots/{main_bot['id']}/leads"
        baseline_base = base.replace(f":{port}/", f":{baseline_port}/")
        headers = {"Authorization": f"Bearer {key.secret}"}
        codec = CursorCodec(secret.encode())
        results = []
        budget = load_settings().mongodb_timeout_ms / 1000
        async with ClientSession() as http:

            async def cursor_after(leads: int, params: dict[str, str]) -> str | None:
                """The cursor after the first ``leads`` leads, paged 100 at a time by
                cursor (an offset page that deep can take longer than the budget); None
                when a page keeps failing (a 503: past the store budget)."""
                cursor = ""
                for _ in range(leads // 100):
                    page = {**params, "limit": "100", **({"cursor": cursor} if cursor else {})}
                    for _attempt in range(3):
                        async with http.get(base, params=page, headers=headers) as resp:
                            body = await resp.json()
                        if resp.status != 503:
                            break
                    if resp.status != 200:
                        print(f"  no cursor for {params}: {resp.status} {body}", flush=True)
                        return None
                    cursor = body["data"]["pagination"]["nextCursor"]
                return cursor

            def wanted(label: str) -> bool:
                return not args.only or any(text in label for text in args.only)

            deep_cursor = await cursor_after(5000, {}) if wanted("cursor page (") else None
            name_cursor = (
                await cursor_after(1000, {"sort": "name"}) if wanted("sort name (") else None
            )
            now = datetime.now(UTC)
            queries = {
                "page 1": {},
                "page 500": {"page": "500"},
                **(
                    {"cursor page (after 5,000 leads)": {"cursor": deep_cursor}}
                    if deep_cursor
                    else {}
                ),
                "status filter": {"status": "qualified"},
                "date range (7 days)": {
                    "createdAfter": (datetime.now(UTC) - timedelta(days=60)).isoformat(),
                    "createdBefore": (datetime.now(UTC) - timedelta(days=53)).isoformat(),
                },
                "updated range (7 days)": {
                    "updatedAfter": (now - timedelta(days=60)).isoformat(),
                    "updatedBefore": (now - timedelta(days=53)).isoformat(),
                },
                "two statuses, two sources": {
                    "status": "new,contacted",
                    "source": "website,referral",
                },
                "metadata filter": {"metadata.plan": "enterprise"},
                "metadata number": {"metadata.seats": "42"},
                "metadata boolean": {"metadata.trial": "true"},
                "two metadata filters": {"metadata.plan": "pro", "metadata.utm_source": "google"},
                "email, exact": {"email": "joanna.doe21@example.com"},
                "phone, as a number": {"phone": "+1 (555) 210-0021"},
                "externalId, exact": {"externalId": "crm-21"},
                "search, one word": {"search": "joanna"},
                "search, two words": {"search": "jo garcía"},
                "sort createdAt (oldest first)": {"sort": "createdAt"},
                "sort updatedAt": {"sort": "updatedAt"},
                "sort -updatedAt": {"sort": "-updatedAt"},
                "sort name": {"sort": "name"},
                "sort -name": {"sort": "-name"},
                **(
                    {
                        "cursor page, sort name (after 1,000)": {
                            "cursor": name_cursor,
                            "sort": "name",
                        }
                    }
                    if name_cursor
                    else {}
                ),
                "search + status + sort name": {
                    "search": "jo",
                    "status": "qualified",
                    "sort": "name",
                },
            }
            for label, params in queries.items():
                if not wanted(label):
                    continue
                query = parse_list_query(MultiDict(params), codec)
                try:
                    plans = await repo.explain_list(chatbot_id=main_bot["id"], query=query)
                except AppError:  # the store did not answer the explain in time
                    plans = []
                http_ms, repo_ms, count = [], [], None
                statuses: dict[int, int] = {}
                baseline_ms: list[float] = []
                baseline_statuses: dict[int, int] = {}

                async def timed(
                    url: str, times: list[float], seen: dict[int, int], params: dict[str, str]
                ) -> Any:
                    t0 = time.perf_counter()
                    async with http.get(url, params=params, headers=headers) as resp:
                        body = await resp.json()
                    times.append((time.perf_counter() - t0) * 1000)
                    seen[resp.status] = seen.get(resp.status, 0) + 1
                    return resp.status, body

                def refused(seen: dict[int, int]) -> bool:
                    return seen.get(503, 0) >= GIVE_UP_AFTER and 200 not in seen

                for rep in range(args.reps):
                    if refused(statuses) and (not args.baseline or refused(baseline_statuses)):
                        break  # past the budget every time: more runs say nothing new
                    if args.baseline and rep % 2 and not refused(baseline_statuses):
                        await timed(baseline_base, baseline_ms, baseline_statuses, params)
                    status, body = await timed(base, http_ms, statuses, params)
                    if status == 200:
                        count = body["data"]["pagination"]["total"]
                    if args.baseline and not rep % 2 and not refused(baseline_statuses):
                        await timed(baseline_base, baseline_ms, baseline_statuses, params)
                    t0 = time.perf_counter()
                    try:  # with the API's store budget, as a request has
                        with store_deadline(budget):
                            await repo.list(chatbot_id=main_bot["id"], query=query)
                    except AppError:  # past the store budget (a 503): timed all the same
                        pass
                    repo_ms.append((time.perf_counter() - t0) * 1000)
                row = {
                    "query": label,
                    "params": params if "cursor" not in params else {"cursor": "…"},
                    "matches": count,
                    "http_p50_ms": round(statistics.median(http_ms), 1),
                    "http_p95_ms": round(percentile(http_ms, 0.95), 1),
                    "repo_p50_ms": round(statistics.median(repo_ms), 1),
                    "http_over_repo": round(
                        statistics.median(http_ms) / max(statistics.median(repo_ms), 0.01), 2
                    ),
                    "index": " + ".join(dict.fromkeys(index_used(p) for p in plans)),
                    "reps": len(http_ms),
                    "statuses": statuses,
                }
                if args.baseline:
                    row["baseline_http_p50_ms"] = round(statistics.median(baseline_ms), 1)
                    row["baseline_http_p95_ms"] = round(percentile(baseline_ms, 0.95), 1)
                    row["baseline_statuses"] = baseline_statuses
                results.append(row)
                print(
                    f"  {label:38} p50 {row['http_p50_ms']:8.1f} ms  p95 "
                    f"{row['http_p95_ms']:8.1f} ms  repo p50 {row['repo_p50_ms']:8.1f} ms  "
                    f"{row['index']}"
                    + ("" if set(statuses) == {200} else f"  statuses {statuses}")
                    + (
                        f"  | baseline p50 {row['baseline_http_p50_ms']:8.1f} ms  p95 "
                        f"{row['baseline_http_p95_ms']:8.1f} ms"
                        + (
                            ""
                            if set(baseline_statuses) == {200}
                            else f"  statuses {baseline_statuses}"
                        )
                        if args.baseline
                        else ""
                    ),
                    flush=True,
                )
    finally:
        for each in servers:
            each.terminate()
            each.wait(30)
        await bench.close()

    print()
    print(
        f"{'query':38} {'matches':>8} {'p50 ms':>9} {'p95 ms':>9} {'repo p50':>9} "
        f"{'http/repo':>9} {'non-200':>7}  index"
    )
    for row in results:
        print(
            f"{row['query']:38} {fmt(row['matches']):>8} {row['http_p50_ms']:>9} "
            f"{row['http_p95_ms']:>9} {row['repo_p50_ms']:>9} {row['http_over_repo']:>9} "
            f"{row['reps'] - row['statuses'].get(200, 0):>7}  {row['index']}"
        )
    if args.baseline:
        print(f"\nbaseline ({args.baseline}), timed alternately with the rows above:")
        print(f"{'query':38} {'p50 ms':>9} {'p95 ms':>9}  statuses")
        for row in results:
            print(
                f"{row['query']:38} {row['baseline_http_p50_ms']:>9} "
                f"{row['baseline_http_p95_ms']:>9}  {row['baseline_statuses']}"
            )
    report = {
        "store": "MONGODB_URI" if os.environ.get("MONGODB_URI") else "embedded SecantusDB",
        "driver": os.environ.get("MONGODB_DRIVER", "pymongo"),
        "leads_in_chatbot": args.leads,
        "leads_elsewhere": args.others,
        "seed_seconds": round(seed_seconds, 1),
        "baseline": args.baseline,
        "results": results,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
