"""What a batch at each documented limit costs: `python scripts/batch_limits.py`.

Starts its own SecantusDB and the app in this process (as the test suite does: the test
profile's settings, so the default 1.5 s store budget), then for each shape of batch at
a documented limit (100 items; a 1 MiB body; the metadata limits; names and emails at
their lengths; upserts into leads holding the most metadata) sends it, on a chatbot of
its own, while a client keeps creating single leads on that chatbot (one every 50 ms,
from 0.3 s before the batch until 3 s after its answer). Per shape: the batch's status
and time, the index entries its leads add (the multikey entries of metadata and search;
an upsert also rewrites those of the lead it updates), and the single creates' statuses
and slowest time. Between shapes it waits for the store to be idle. Reports, does not
gate; one JSON line per shape and round.

    python scripts/batch_limits.py [--rounds 3] [--only SHAPE ...] [--settle 3]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from pollybot_leads.accounts.repository import AccountRepository
from pollybot_leads.app import create_app
from pollybot_leads.indexes import ensure_all_indexes
from pollybot_leads.leads.rules import metadata_index_entries, search_prefixes, search_terms
from pollybot_leads.settings import load_settings
from pollybot_leads.store.client import Mongo
from pollybot_leads.store.embedded import EmbeddedStore, free_port

Items = list[dict[str, Any]]


def _lead(i: int, **extra: Any) -> dict[str, Any]:
    return {"name": f"Lead {i}", "email": f"lead{i}@example.com", **extra}


def _long_name(i: int) -> str:
    """200 characters of words with many distinct pieces (many search prefixes)."""
    words, n = [], 0
    while True:
        word = "".join(chr(97 + (n * 7 + i + k) % 26) for k in range(5)) + f"-{i:03d}{n:02d}"
        if len(" ".join([*words, word])) > 200:
            return " ".join(words)
        words.append(word)
        n += 1


def _long_email(i: int) -> str:
    """An address near 254 characters, its local part and domain in many pieces."""
    local = ".".join(f"p{j:02d}{i:04d}" for j in range(20))[:60].strip(".")
    domain = ".".join(f"d{j:02d}x{i:03d}" for j in range(22))
    return f"{local}@{domain}.com"


def _values(n: int, keys: int = 1) -> dict[str, list[int]]:
    """Metadata of ``keys`` arrays of ``n`` small integers: n * keys filterable values."""
    return {f"k{k:02d}": list(range(n)) for k in range(keys)}


# name -> (leads stored first, the batch, whether it is an upsert)
Shape = tuple[Items, Items, bool]


def shapes(most_values: int, limit: int) -> dict[str, Callable[[], Shape]]:
    """Batches at each documented limit. ``most_values``: the most filterable metadata
    values a lead may hold (its 16 KiB allow about 5,000 where no other limit applies);
    ``limit``: the most index entries a batch may write."""
    fat = [_lead(i, metadata=_values(most_values // 10 - 1, 10)) for i in range(100)]
    plain = index_entries([_lead(i) for i in range(100)])  # search prefixes alone
    # 100 creates, each with metadata values up to the limit in all.
    per_create = (limit - plain) // 100
    # 100 upserts into leads holding `per_lead` values, each adding one: both counted.
    per_lead = (limit - 2 * plain - 100) // 200
    few = limit // (most_values + plain // 100)
    return {
        "100 minimal": lambda: ([], [_lead(i) for i in range(100)], False),
        "100 x 10 KB string (1 MiB)": lambda: (
            [],
            [_lead(i, metadata={"pad": "x" * 10_200}) for i in range(100)],
            False,
        ),
        "20 x [0..3199] (issue)": lambda: (
            [],
            [_lead(i, metadata={"a": list(range(3200))}) for i in range(20)],
            False,
        ),
        "100 x 99 keys x 16 (issue)": lambda: (
            [],
            [_lead(i, metadata=_values(16, 99)) for i in range(100)],
            False,
        ),
        "100 x 100 keys x 33 (1 MiB)": lambda: (
            [],
            [_lead(i, metadata=_values(33, 100)) for i in range(100)],
            False,
        ),
        "100 x 200-char name, 250-char email": lambda: (
            [],
            [{"name": _long_name(i), "email": _long_email(i)} for i in range(100)],
            False,
        ),
        "100 x [0..99]": lambda: (
            [],
            [_lead(i, metadata={"a": list(range(100))}) for i in range(100)],
            False,
        ),
        f"at the limit: 100 creates x {per_create} values": lambda: (
            [],
            [_lead(i, metadata={"a": list(range(per_create))}) for i in range(100)],
            False,
        ),
        f"at the limit: {few} creates x {most_values - 10} values": lambda: (
            [],
            fat[:few],
            False,
        ),
        f"at the limit: 100 upserts into leads of {per_lead} values": lambda: (
            [_lead(i, metadata={"a": list(range(per_lead))}) for i in range(100)],
            [_lead(i, metadata={"seen": True}) for i in range(100)],
            True,
        ),
        f"1 x {most_values - 10} values": lambda: ([], fat[:1], False),
        f"100 upserts into leads of {most_values - 10} values": lambda: (
            fat,
            [_lead(i, metadata={"seen": True}) for i in range(100)],
            True,
        ),
    }


def index_entries(items: Items) -> int:
    total = 0
    for item in items:
        total += len(metadata_index_entries(item.get("metadata") or {}))
        total += len(search_prefixes(search_terms(item["name"], item["email"])))
    return total


async def post_batch(api: TestClient, url: str, headers: dict[str, str], body: bytes) -> Any:
    return await api.post(
        url + "/batch",
        data=io.BytesIO(body),
        headers={**headers, "Content-Type": "application/json"},
    )


async def seed(api: TestClient, url: str, headers: dict[str, str], leads: Items) -> None:
    """Store ``leads`` a few at a time (each batch small enough to succeed)."""
    step = max(1, 5000 // max(1, index_entries(leads[:1])))
    for start in range(0, len(leads), step):
        body = json.dumps({"leads": leads[start : start + step]}).encode()
        for _ in range(20):
            resp = await post_batch(api, url, headers, body)
            text = await resp.text()
            if resp.status == 200 and json.loads(text)["data"]["failed"] == 0:
                break
            await asyncio.sleep(1.0)
        else:
            raise RuntimeError(f"could not seed: {resp.status} {text[:300]}")


async def run_shape(
    api: TestClient, url: str, headers: dict[str, str], shape: Shape
) -> dict[str, Any]:
    stored, items, upsert = shape
    await seed(api, url, headers, stored)
    await asyncio.sleep(1.0)
    body = {"leads": items, **({"upsert": "email"} if upsert else {})}
    raw = json.dumps(body, separators=(",", ":")).encode()
    stop = asyncio.Event()
    singles: list[tuple[int, float]] = []

    async def creates() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            began = time.monotonic()
            resp = await api.post(
                url, json={"name": "Single", "email": f"single{n}@example.com"}, headers=headers
            )
            await resp.read()
            singles.append((resp.status, time.monotonic() - began))
            await asyncio.sleep(0.05)

    single_task = asyncio.create_task(creates())
    await asyncio.sleep(0.3)
    began = time.monotonic()
    resp = await post_batch(api, url, headers, raw)
    text = await resp.text()
    seconds = time.monotonic() - began
    await asyncio.sleep(3.0)
    stop.set()
    await single_task
    outcome: dict[str, Any] = {"status": resp.status, "seconds": round(seconds, 3)}
    answer = json.loads(text)
    if resp.status == 200:
        data = answer["data"]
        outcome.update(created=data["created"], updated=data["updated"], failed=data["failed"])
        failures = [r["error"] for r in data["results"] if r["status"] >= 400]
        if failures:
            outcome["first_failure"] = failures[0].get("details") or failures[0]["message"]
    else:
        outcome["error"] = answer["error"]["code"]
        outcome["details"] = answer["error"].get("details") or answer["error"]["message"]
    entries = index_entries(items)
    if upsert:  # the updated leads' entries, before and after (the item merged in)
        after = [
            {**old, "metadata": {**old.get("metadata", {}), **new.get("metadata", {})}}
            for old, new in zip(stored, items, strict=True)
        ]
        entries = index_entries(stored) + index_entries(after)
    outcome.update(
        body_bytes=len(raw),
        index_entries=entries,
        singles=dict(Counter(status for status, _ in singles)),
        singles_slowest=round(max(s for _, s in singles), 3),
    )
    return outcome


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="batch-limits-") as data_dir:
        store = EmbeddedStore(Path(data_dir), free_port())
        store.start()
        try:
            env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
            settings = load_settings(env, profile="test").replace(
                mongodb_uri=store.uri,
                mongodb_database=f"limits_{secrets.token_hex(4)}",
                cursor_secret="batch-limits",
                redis_url="",
            )
            mongo = Mongo(settings.mongodb_uri, settings.mongodb_database, settings.mongodb_driver)
            await mongo.connect()
            await ensure_all_indexes(mongo)
            accounts = AccountRepository(mongo)
            api = TestClient(TestServer(create_app(settings)))
            await api.start_server()
            try:
                for round_ in range(args.rounds):
                    for name, make in shapes(args.most_values, args.limit).items():
                        if args.only and not any(word in name for word in args.only):
                            continue
                        workspace = await accounts.create_workspace(name="W")
                        bot = await accounts.create_chatbot(workspace_id=workspace["id"], name="B")
                        key = await accounts.create_key(workspace_id=workspace["id"])
                        url = f"/api/v1/chatbots/{bot['id']}/leads"
                        headers = {"Authorization": f"Bearer {key.secret}"}
                        outcome = await run_shape(api, url, headers, make())
                        print(json.dumps({"round": round_, "shape": name, **outcome}), flush=True)
                        await asyncio.sleep(args.settle)  # the store idle again
            finally:
                await api.close()
                await mongo.close()
        finally:
            store.discard()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--only", nargs="*", help="shapes whose name contains one of these")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds between shapes")
    parser.add_argument(
        "--most-values",
        type=int,
        default=1000,
        help="the most filterable metadata values a lead may hold",
    )
    parser.add_argument(
        "--limit", type=int, default=10_000, help="the most index entries a batch may write"
    )
    sys.exit(asyncio.run(main(parser.parse_args())))
