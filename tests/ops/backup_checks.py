"""What a restored chatbot must look like through the API, and the CLI run as a user
runs it (without blocking the event loop, so an in-process API keeps serving)."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from pollybot_leads.leads.rules import STATUSES


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, dict[str, Any], str]:
    """``pollybot-leads …`` in a subprocess: exit code, its JSON (or {}), its stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pollybot_leads",
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 600)
    text = out.decode().strip()
    assert proc.returncode is not None
    return proc.returncode, (json.loads(text) if text else {}), err.decode()


async def _data(resp: Any) -> Any:
    assert resp.status == 200, await resp.text()
    return (await resp.json())["data"]


@dataclass
class ChatbotView:
    """A chatbot as its key sees it: every lead (as the export shows it), the list's
    totals, and its whole event feed."""

    leads: dict[str, dict[str, Any]]
    total: int
    by_status: dict[str, int]
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def last_sequence(self) -> int:
        return self.events[-1]["sequence"] if self.events else 0


async def view(http: Any, chatbot_id: str, headers: dict[str, str]) -> ChatbotView:
    """``http``: an aiohttp TestClient, or a ClientSession with a base_url."""
    leads_url = f"/api/v1/chatbots/{chatbot_id}/leads"
    resp = await http.get(leads_url + "/export", params={"format": "ndjson"}, headers=headers)
    assert resp.status == 200, await resp.text()
    leads = {lead["id"]: lead for lead in map(json.loads, (await resp.text()).splitlines())}
    total = (await _data(await http.get(leads_url, params={"limit": "1"}, headers=headers)))[
        "pagination"
    ]["total"]
    by_status = {}
    for status in STATUSES:
        params = {"limit": "1", "status": status}
        page = await _data(await http.get(leads_url, params=params, headers=headers))
        by_status[status] = page["pagination"]["total"]
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        page = await _data(
            await http.get(
                f"/api/v1/chatbots/{chatbot_id}/events",
                params={"after": str(after), "limit": "100"},
                headers=headers,
            )
        )
        events += page["events"]
        if not page["pagination"]["hasMore"]:
            break
        after = page["pagination"]["nextAfter"]
    return ChatbotView(leads, total, by_status, events)


def assert_consistent(chatbot: ChatbotView) -> None:
    """Its leads, counters and events agree: the list's totals count its leads, its
    events are numbered 1, 2, 3… and, replayed, give exactly its leads as they are."""
    assert chatbot.total == len(chatbot.leads)
    for status in STATUSES:
        held = sum(1 for lead in chatbot.leads.values() if lead["status"] == status)
        assert chatbot.by_status[status] == held, status
    sequences = [event["sequence"] for event in chatbot.events]
    assert sequences == list(range(1, len(sequences) + 1))
    replayed: dict[str, dict[str, Any]] = {}
    for event in chatbot.events:
        lead = event["data"]["lead"]
        if event["type"] == "lead.deleted":
            replayed.pop(lead["id"], None)
        else:
            replayed[lead["id"]] = lead
    assert set(replayed) == set(chatbot.leads)
    for lead_id, lead in chatbot.leads.items():  # an export shows no statusHistory
        assert {k: replayed[lead_id].get(k) for k in lead} == lead


def assert_feed_prefix(source: ChatbotView, restored: ChatbotView) -> None:
    """The restored feed is where the source's stood at the dump: the same events, but
    those the source redacted since (their lead deleted after the dump)."""
    assert len(source.events) >= len(restored.events)
    for now, then in zip(source.events, restored.events, strict=False):
        if now["data"].get("redacted") and not then["data"].get("redacted"):
            assert {k: v for k, v in now.items() if k != "data"} == {
                k: v for k, v in then.items() if k != "data"
            }
            assert now["data"]["lead"]["id"] == then["data"]["lead"]["id"]
        else:
            assert now == then


async def new_event_continues(http: Any, chatbot_id: str, headers: dict[str, str]) -> None:
    """A create after the restore is numbered right after the restored events."""
    before = await view(http, chatbot_id, headers)
    resp = await http.post(
        f"/api/v1/chatbots/{chatbot_id}/leads",
        json={"name": "After Restore", "email": f"after.{time.monotonic_ns()}@example.com"},
        headers=headers,
    )
    assert resp.status == 201, await resp.text()
    created = (await resp.json())["data"]
    after = await view(http, chatbot_id, headers)
    assert after.events[-1]["sequence"] == before.last_sequence + 1
    assert after.events[-1]["data"]["lead"]["id"] == created["id"]
    assert after.total == before.total + 1


class Writer:
    """Creates (with some updates and deletes, unless ``creates_only``) through the API,
    about ``rate`` a second over the chatbots (id, headers), until stopped; remembers when
    each write was acknowledged."""

    def __init__(
        self,
        http: Any,
        chatbots: list[tuple[str, dict[str, str]]],
        rate: float = 100.0,
        *,
        creates_only: bool = False,
    ) -> None:
        self.http, self.chatbots, self.rate = http, chatbots, rate
        self.mix = (1, 0, 0) if creates_only else (8, 1, 1)
        self.acked: list[tuple[float, str]] = []
        self.failed: list[str] = []
        self._live: dict[str, list[str]] = {chatbot_id: [] for chatbot_id, _ in chatbots}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, workers: int = 4) -> Writer:
        self._tasks = [asyncio.create_task(self._work(w, workers)) for w in range(workers)]
        return self

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def acked_between(self, began: float, ended: float) -> int:
        return sum(1 for at, _ in self.acked if began <= at <= ended)

    async def _work(self, worker: int, workers: int) -> None:
        rng = random.Random(worker)
        n = 0
        while not self._stop.is_set():
            began = time.monotonic()
            chatbot_id, headers = self.chatbots[(worker + n) % len(self.chatbots)]
            leads_url = f"/api/v1/chatbots/{chatbot_id}/leads"
            live = self._live[chatbot_id]
            op = rng.choices(("create", "update", "delete"), self.mix)[0] if live else "create"
            n += 1
            if op == "create":
                resp = await self.http.post(
                    leads_url,
                    json={"name": f"Live {worker}-{n}", "email": f"live{worker}.{n}@example.com"},
                    headers=headers,
                )
                if resp.status == 201:
                    live.append((await resp.json())["data"]["id"])
            elif op == "update":
                resp = await self.http.put(
                    f"{leads_url}/{rng.choice(live)}",
                    json={"status": rng.choice(STATUSES), "metadata": {"n": n}},
                    headers=headers,
                )
            else:
                lead_id = live.pop(rng.randrange(len(live)))
                resp = await self.http.delete(
                    f"{leads_url}/{lead_id}", params={"confirm": "true"}, headers=headers
                )
            await resp.read()
            if resp.status < 300:
                self.acked.append((time.monotonic(), op))
            else:
                self.failed.append(f"{op} {resp.status}")
            await asyncio.sleep(max(0.0, workers / self.rate - (time.monotonic() - began)))


@dataclass
class DumpRun:
    """What ``admin dump`` answered, and while which writes went on."""

    code: int
    summary: dict[str, Any]
    err: str
    acked_during: int  # writes the writer had acknowledged while the dump ran


async def dump_under_writes(
    writer: Writer, *, acked_first: int, out: str, env: dict[str, str], then: float = 0.0
) -> DumpRun:
    """``admin dump --out out`` once ``writer`` (started) has ``acked_first`` writes
    acknowledged, the writes going on throughout (and ``then`` seconds after); the writer
    is stopped at the end."""
    try:
        while len(writer.acked) < acked_first:
            await asyncio.sleep(0.05)
        began = time.monotonic()
        code, summary, err = await run_cli("admin", "dump", "--out", out, env=env)
        ended = time.monotonic()
        await asyncio.sleep(then)
    finally:
        await writer.stop()
    return DumpRun(code, summary, err, writer.acked_between(began, ended))
