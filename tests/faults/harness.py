"""Real processes to break: a SecantusDB store, the API server, and a load against it.

The store and the server each run as a subprocess of the test, so a fault is a real one:
SIGKILL (a crash: nothing is flushed, no handler runs), SIGSTOP (a stalled store: its
port still accepts connections but nothing answers) and a restart on the same data
directory and port. The load is an aiohttp client with concurrent workers; it records
every request's outcome and latency, and every lead id a 201 acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout

from pollybot_leads.accounts.repository import AccountRepository
from pollybot_leads.leads.rules import STATUSES
from pollybot_leads.store.client import Mongo
from pollybot_leads.store.embedded import EmbeddedStore, port_open, stop_process

REQUEST_TIMEOUT = ClientTimeout(total=10)  # a client gives up on a request after this
SERVER_START_SECONDS = 30.0
LOG_TAIL_LINES = 30


def _die_with_parent() -> None:  # in the child between fork and exec
    """A server left behind by a killed test run dies with it (Linux)."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} unreadable)"
    return "\n".join(text.splitlines()[-lines:])


# --- the store --------------------------------------------------------------------------


class Store:
    """One SecantusDB server on a fixed data directory and port, across its restarts.

    Started from the test's main thread: the store dies with the thread that started it
    (PR_SET_PDEATHSIG), so it must not be started from a short-lived worker thread.
    """

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self._current: EmbeddedStore | None = None
        self.starts = 0

    @property
    def uri(self) -> str:
        return EmbeddedStore(self.data_dir, self.port).uri

    @property
    def process(self) -> subprocess.Popen:
        assert self._current is not None and self._current.process is not None, "store not up"
        return self._current.process

    @property
    def running(self) -> bool:
        return (
            self._current is not None
            and self._current.process is not None
            and self._current.process.poll() is None
        )

    def start(self) -> float:
        """Start (or restart, on the same data); returns the seconds it took."""
        assert not self.running, "store already running"
        began = time.monotonic()
        store = EmbeddedStore(self.data_dir, self.port)
        store.start()
        self._current = store
        self.starts += 1
        return time.monotonic() - began

    def kill(self) -> None:
        """A crash: SIGKILL, then reap it. The data directory stays as the crash left it."""
        process = self.process
        process.send_signal(signal.SIGKILL)
        process.wait(15)
        assert self._current is not None
        self._current.process = None  # nothing left for stop() to do

    def pause(self) -> None:
        """A stall: the process stops; its listening socket still accepts connections.
        Returns once every thread of it has stopped: a thread inside a system call (a
        journal sync) stops only when that call returns, and until then it may still
        answer a command sent after the pause."""
        self.process.send_signal(signal.SIGSTOP)
        tasks = Path(f"/proc/{self.process.pid}/task")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            states = []
            for task in tasks.iterdir():
                with contextlib.suppress(OSError):  # a thread that just ended
                    states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
            if states and all(state in "tT" for state in states):
                return
            time.sleep(0.005)
        raise AssertionError(f"the store did not stop within 5 s: {states}")

    def resume(self) -> None:
        if self.running:
            self.process.send_signal(signal.SIGCONT)

    def discard(self) -> None:
        """The end of the test: whatever state it is in, the process goes, and fast.

        SIGKILL, not a clean stop: the data is thrown away, and a clean stop after a load
        costs SecantusDB seconds. SIGKILL also ends a paused process.
        """
        if self.running:
            self.kill()
        self._current = None

    def log_tail(self) -> str:
        return tail(self.data_dir / "secantusdb.log")


# --- the API server ---------------------------------------------------------------------


class ApiServer:
    """`python -m pollybot_leads serve --port N` on a fixed port, across its restarts."""

    def __init__(self, port: int, env: dict[str, str], log_path: Path) -> None:
        self.port = port
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> float:
        """Start (or restart) and wait until it accepts connections; returns the seconds."""
        assert self.process is None, "server already running"
        began = time.monotonic()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pollybot_leads", "serve", "--port", str(self.port)],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        self.starts += 1
        deadline = began + SERVER_START_SECONDS
        # The site binds after the app's startup (indexes ensured): an open port is ready.
        while not port_open("127.0.0.1", self.port):
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise RuntimeError(f"API server exited with {code}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"API server did not start:\n{self.log_tail()}")
            time.sleep(0.05)
        return time.monotonic() - began

    def kill(self) -> None:
        """A crash: SIGKILL, then reap it."""
        assert self.process is not None, "server not running"
        process, self.process = self.process, None
        process.send_signal(signal.SIGKILL)
        process.wait(15)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, 15)

    def log_tail(self) -> str:
        return tail(self.log_path)


def server_env(uri: str, database: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "MONGODB_URI", "MONGODB_DATABASE", "PORT", "HOST")
    }
    env.update(
        MONGODB_URI=uri,
        MONGODB_DATABASE=database,
        PB_CONFIG="test",
        LOG_LEVEL="WARNING",
        CURSOR_SECRET="x",
    )
    return env


# --- the tenant and direct store access -------------------------------------------------


@dataclass(frozen=True)
class Tenant:
    chatbot_id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    @property
    def leads_path(self) -> str:
        return f"/api/v1/chatbots/{self.chatbot_id}/leads"

    def lead_path(self, lead_id: str) -> str:
        return f"{self.leads_path}/{lead_id}"


@contextlib.asynccontextmanager
async def direct_db(uri: str, database: str) -> AsyncIterator[Any]:
    """A fresh client of the store (never one that lived through a fault)."""
    mongo = Mongo(uri, database)
    try:
        yield mongo.db
    finally:
        await mongo.close()


async def create_tenant(uri: str, database: str) -> Tenant:
    mongo = Mongo(uri, database)
    try:
        accounts = AccountRepository(mongo)
        workspace = await accounts.create_workspace(name="Faults")
        chatbot = await accounts.create_chatbot(workspace_id=workspace["id"], name="Bot")
        issued = await accounts.create_key(workspace_id=workspace["id"], name="faults")
    finally:
        await mongo.close()
    return Tenant(chatbot["id"], issued.secret)


# --- requests and their outcomes --------------------------------------------------------


@dataclass
class Outcome:
    """One request as the client saw it. ``status`` None: no HTTP response at all."""

    op: str
    started: float  # time.monotonic()
    latency: float
    status: int | None
    code: str | None = None  # error.code of an error envelope
    retry_after: str | None = None
    lead_id: str | None = None  # the lead a 201 created
    error: str | None = None  # what the client got instead of a response

    @property
    def ended(self) -> float:
        return self.started + self.latency

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def unavailable(self) -> bool:
        """The contract's answer for a store it cannot use: 503 + code + Retry-After."""
        return (
            self.status == 503
            and self.code == "SERVICE_UNAVAILABLE"
            and bool(self.retry_after)
            and self.retry_after.strip().isdigit()
        )

    def describe(self, origin: float = 0.0) -> str:
        what = self.error or f"{self.status} {self.code or ''}".strip()
        extra = f" Retry-After={self.retry_after}" if self.retry_after else ""
        at = self.started - origin
        return f"{self.op} at t={at:+.2f}s took {self.latency:.2f}s: {what}{extra}"


async def send(http: ClientSession, op: str, method: str, url: str, **kwargs: Any) -> Outcome:
    """One request, timed; every failure becomes an Outcome, never an exception."""
    started = time.monotonic()
    try:
        async with http.request(method, url, timeout=REQUEST_TIMEOUT, **kwargs) as resp:
            body: Any = None
            if resp.content_type == "application/json":
                with contextlib.suppress(ValueError):
                    body = await resp.json()
            else:
                await resp.read()
            latency = time.monotonic() - started
            outcome = Outcome(op, started, latency, resp.status)
            outcome.retry_after = resp.headers.get("Retry-After")
            if isinstance(body, dict):
                error = body.get("error")
                if isinstance(error, dict):
                    outcome.code = error.get("code")
                if resp.status == 201 and isinstance(body.get("data"), dict):
                    outcome.lead_id = body["data"].get("id")
            return outcome
    except (ClientError, TimeoutError) as exc:
        return Outcome(op, started, time.monotonic() - started, None, error=type(exc).__name__)


async def list_total(
    http: ClientSession, base_url: str, tenant: Tenant, status: str | None = None
) -> int | None:
    """``pagination.total`` of the chatbot's list (optionally of one status); None on failure."""
    params = {"limit": "1"} | ({"status": status} if status else {})
    try:
        async with http.get(
            base_url + tenant.leads_path,
            params=params,
            headers=tenant.headers,
            timeout=REQUEST_TIMEOUT,
        ) as resp:
            if resp.status != 200:
                await resp.read()
                return None
            return (await resp.json())["data"]["pagination"]["total"]
    except (ClientError, TimeoutError):
        return None


def summarize(outcomes: Iterable[Outcome]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for o in outcomes:
        key = f"{o.op}:{o.error or o.status}{'/' + o.code if o.code else ''}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


# --- single requests and checks shared by the tests -------------------------------------


def worst(outcomes: list[Outcome], origin: float, n: int = 5) -> str:
    slowest = sorted(outcomes, key=lambda o: (o.status is not None, -o.latency))[:n]
    return "; ".join(o.describe(origin) for o in slowest)


async def missing_leads(store: Store, database: str, ids: list[str]) -> list[str]:
    """The ids among ``ids`` that the store does not hold, asked with a fresh client."""
    async with direct_db(store.uri, database) as db:
        found = await db["leads"].count_documents({"_id": {"$in": ids}})
        if found == len(ids):
            return []
        present = {doc["_id"] async for doc in db["leads"].find({"_id": {"$in": ids}}, {"_id": 1})}
    return [i for i in ids if i not in present]


def get_lead(
    http: ClientSession, server: ApiServer, tenant: Tenant, lead_id: str
) -> Awaitable[Outcome]:
    return send(
        http, "get", "GET", server.base_url + tenant.lead_path(lead_id), headers=tenant.headers
    )


def create_lead(
    http: ClientSession, server: ApiServer, tenant: Tenant, n: int
) -> Awaitable[Outcome]:
    body = {"name": f"Probe {n}", "email": f"probe{n}@faults.example.com", "metadata": {"n": n}}
    return send(
        http,
        "create",
        "POST",
        server.base_url + tenant.leads_path,
        json=body,
        headers=tenant.headers,
    )


def list_leads(
    http: ClientSession, server: ApiServer, tenant: Tenant, status: str | None = None
) -> Awaitable[Outcome]:
    params = {"limit": "1"} | ({"status": status} if status else {})
    return send(
        http,
        "list" if status is None else f"list?status={status}",
        "GET",
        server.base_url + tenant.leads_path,
        params=params,
        headers=tenant.headers,
    )


# --- the load ---------------------------------------------------------------------------


@dataclass
class Load:
    """Concurrent workers sending a mix of operations until stopped (bounded regardless).

    ``mix`` weighs the operations: ``create`` (POST), ``get`` (GET one acknowledged
    lead), ``list`` (GET ?limit=1), ``update`` (PUT a new status on an acknowledged lead),
    ``delete`` (DELETE ?confirm=true an acknowledged lead, each at most once). Operations
    on a lead fall back to ``create`` while no lead is acknowledged yet.
    """

    http: ClientSession
    base_url: str
    tenant: Tenant
    mix: dict[str, int]
    workers: int = 24
    max_requests: int = 20_000
    max_seconds: float = 30.0
    seed: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)  # ids every 201 answered
    unanswered: list[Outcome] = field(default_factory=list)  # cut off by stop()
    _live: list[str] = field(default_factory=list)  # acked, not sent to DELETE yet
    _tasks: list[asyncio.Task] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _sent: int = 0
    _in_flight: dict[int, tuple[str, float]] = field(default_factory=dict)
    _deadline: float = 0.0

    def start(self) -> Load:
        self._deadline = time.monotonic() + self.max_seconds
        self._tasks = [asyncio.create_task(self._worker(i)) for i in range(self.workers)]
        return self

    async def stop(self, grace: float = 12.0) -> None:
        """Stop sending, wait up to ``grace`` for answers, then cut off what is left."""
        self._stop.set()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=grace)
        now = time.monotonic()
        for worker, (op, started) in list(self._in_flight.items()):
            if self._tasks[worker] in pending:
                self.unanswered.append(
                    Outcome(op, started, now - started, None, error="unanswered at stop")
                )
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for task in self._tasks:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # a bug in the harness, not in the product

    @property
    def all_outcomes(self) -> list[Outcome]:
        return self.outcomes + self.unanswered

    def _running(self) -> bool:
        return (
            not self._stop.is_set()
            and self._sent < self.max_requests
            and time.monotonic() < self._deadline
        )

    async def _worker(self, worker: int) -> None:
        rng = random.Random(self.seed * 1000 + worker)
        ops, weights = zip(*self.mix.items(), strict=True)
        n = 0
        while self._running():
            self._sent += 1
            n += 1
            op = rng.choices(ops, weights)[0]
            if op in ("get", "update", "delete") and not self._live:
                op = "create"
            request = self._request(op, rng, worker, n)
            self._in_flight[worker] = (op, time.monotonic())
            outcome = await request
            del self._in_flight[worker]
            self.outcomes.append(outcome)
            if outcome.status == 201 and outcome.lead_id:
                self.acked.append(outcome.lead_id)
                self._live.append(outcome.lead_id)
            if not outcome.ok:
                # No hot loop against a dead port or a fast 503.
                await asyncio.sleep(0.02)

    def _request(self, op: str, rng: random.Random, worker: int, n: int) -> Awaitable[Outcome]:
        url = self.base_url + self.tenant.leads_path
        headers = self.tenant.headers
        if op == "create":
            body = {
                "name": f"Fault Lead {worker}-{n}",
                "email": f"w{worker}.n{n}@faults.example.com",
                "metadata": {"worker": worker, "n": n, "seed": self.seed},
            }
            return send(self.http, op, "POST", url, json=body, headers=headers)
        if op == "list":
            return send(self.http, op, "GET", url, params={"limit": "1"}, headers=headers)
        if op == "delete":
            lead_id = self._live.pop(rng.randrange(len(self._live)))
            return send(
                self.http,
                op,
                "DELETE",
                f"{url}/{lead_id}",
                params={"confirm": "true"},
                headers=headers,
            )
        lead_id = rng.choice(self._live)
        if op == "get":
            return send(self.http, op, "GET", f"{url}/{lead_id}", headers=headers)
        if op == "update":
            body = {"status": rng.choice(STATUSES)}
            return send(self.http, op, "PUT", f"{url}/{lead_id}", json=body, headers=headers)
        raise AssertionError(op)


# --- waiting ----------------------------------------------------------------------------


async def first_success(
    probe: Callable[[], Awaitable[list[Outcome]]], *, within: float, interval: float = 0.2
) -> tuple[float | None, list[Outcome]]:
    """Run ``probe`` until all its requests succeed, for at most ``within`` seconds.

    Returns the seconds until the first probe that fully succeeded began (None if none
    did) and every outcome seen.
    """
    began = time.monotonic()
    seen: list[Outcome] = []
    while time.monotonic() - began < within:
        started = time.monotonic()
        outcomes = await probe()
        seen.extend(outcomes)
        if outcomes and all(o.ok for o in outcomes):
            return started - began, seen
        await asyncio.sleep(interval)
    return None, seen
