"""The MongoDB driver, chosen by one setting. The only module that imports a driver.

Three guarantees of the store path live here:

- **Durable acknowledgements.** Every write, and every transaction's commit, uses the
  configured write concern: journaled by default (``w: 1, j: true``), so a write the
  API has answered survives a crash of the store right after (the default write
  concern lost acknowledged inserts to a SIGKILL of the embedded store, docs/stores.md).
- **Bounded time.** :func:`store_deadline` gives a request one budget for all its store
  calls (PyMongo's client-side operation timeout: server selection, connection checkout,
  the round trip, and ``maxTimeMS`` on the server). A store that is stalled, dead or
  unreachable costs a request that budget at most, then a 503.
- **Atomic bookkeeping.** :meth:`Mongo.transaction` runs a function in a multi-document
  transaction and retries it on transient conflicts while the budget lasts.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import pymongo
from pymongo import WriteConcern, monitoring
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

from ..errors import ServiceUnavailable
from ..settings import Settings
from ..telemetry.metrics import store_unavailable
from .quirks import PLAIN, StoreQuirks, detect
from .sessions import SessionRegistry

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

# What a call raises when the store did not answer at all (unreachable, refused, timed
# out choosing a server): for callers outside this package, which name no driver.
UNREACHABLE: tuple[type[Exception], ...] = (ConnectionFailure,)

SERVER_SELECTION_TIMEOUT_MS = 5000
RETRY_AFTER_SECONDS = 2
# Transient transaction conflicts are retried this often at most (and never past the
# request's deadline), with a short random back-off that grows with each attempt.
TRANSACTION_ATTEMPTS = 30

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "store_deadline", default=None
)


class StoreDeadline:
    """The context of :func:`store_deadline` (a class: it is entered on every request)."""

    __slots__ = ("_grace", "_seconds", "_timeout", "_token")

    def __init__(self, seconds: float, grace: float = 0.0) -> None:
        self._seconds = seconds
        self._grace = grace

    def __enter__(self) -> None:
        end = time.monotonic() + self._seconds
        outer = _deadline.get()
        self._token = _deadline.set(end if outer is None else min(outer, end))
        self._timeout = pymongo.timeout(self._seconds + self._grace)
        self._timeout.__enter__()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self._timeout.__exit__(kind, error, traceback)
        finally:
            _deadline.reset(self._token)


def store_deadline(seconds: float, *, grace: float = 0.0) -> StoreDeadline:
    """Every store call inside shares one budget of ``seconds`` (nested: the tighter).

    ``grace``: a store call in flight when the budget runs out may go on this much longer
    before the driver gives up on it (and closes its connection, leaving the command to
    run in the store). The budget (:func:`remaining`) still decides what starts; the
    caller answers its client at the budget (the deadline middleware's hard cap).
    """
    return StoreDeadline(seconds, grace)


def remaining() -> float | None:
    """Seconds left of the current deadline; None outside one."""
    end = _deadline.get()
    return None if end is None else end - time.monotonic()


def write_concern(w: int | str, journal: bool) -> WriteConcern:
    return WriteConcern(w=w, j=journal)


class _DriverLog(monitoring.ServerHeartbeatListener):
    """What the driver decides about the store, in the log: a failed heartbeat marks the
    server unknown (every call fails fast until the next one succeeds) and clears the
    connection pool, interrupting the calls in flight on it when it timed out."""

    def __init__(self) -> None:
        self._failing = False  # logged once when it starts failing, once when it stops

    def started(self, event: Any) -> None:
        pass

    def succeeded(self, event: Any) -> None:
        if self._failing:
            self._failing = False
            log.warning("store heartbeat answered again")

    def failed(self, event: Any) -> None:
        if not self._failing:
            self._failing = True
            log.warning(
                "store heartbeat failed after %.1f s: %s (connections cleared)",
                event.duration,
                type(event.reply).__name__,
            )


class Mongo:
    """A connected client and database, whichever driver is behind them."""

    def __init__(
        self,
        uri: str,
        database: str,
        driver: str = "pymongo",
        *,
        w: int | str = 1,
        journal: bool = True,
        max_pool_size: int = 100,
        event_listeners: list[Any] | None = None,
    ) -> None:
        self.write_concern = write_concern(w, journal)
        options: dict[str, Any] = {
            "tz_aware": True,
            "serverSelectionTimeoutMS": SERVER_SELECTION_TIMEOUT_MS,
            "connectTimeoutMS": 5000,
            "appname": "pollybot-leads",
            "w": w,
            "journal": journal,
            "maxPoolSize": max_pool_size,
            "event_listeners": [_DriverLog(), *(event_listeners or [])],
        }
        if driver == "motor":
            from motor.motor_asyncio import AsyncIOMotorClient

            self.client: Any = AsyncIOMotorClient(uri, **options)
        elif driver == "pymongo":
            from pymongo import AsyncMongoClient

            self.client = AsyncMongoClient(uri, **options)
        else:  # pragma: no cover - Settings rejects other values
            raise ValueError(f"unknown driver {driver!r}")
        self.driver = driver
        self.db = self.client[database]
        self.quirks: StoreQuirks = PLAIN
        # The sessions transactions run in, recorded while serving (SessionRegistry.kept).
        self.sessions = SessionRegistry(self.db)
        self._description_seen: Any = None
        self._writable = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Mongo:
        return cls(
            settings.mongodb_uri,
            settings.mongodb_database,
            settings.mongodb_driver,
            w=settings.mongodb_w,
            journal=settings.mongodb_journal,
            max_pool_size=settings.mongodb_max_pool_size,
        )

    async def connect(self) -> StoreQuirks:
        """Learn what the server is (its quirks) and check it can run transactions."""
        self.quirks = await detect(self.db)
        hello = await self.db.command("hello")
        if not (hello.get("setName") or hello.get("msg") == "isdbgrid"):
            raise RuntimeError(
                "MongoDB must be a replica set member or mongos (a single-node replica set "
                "is fine): lead writes and their counters commit in one transaction"
            )
        return self.quirks

    def primary_known(self) -> bool:
        """Whether a store call finds its server at once, with no server selection wait:
        PyMongo's client, which knows a server it can write to (a replica set's primary,
        a mongos, or the one server of a direct connection; the embedded store is one).
        motor's calls run in threads, outside the request's timeout context: never."""
        if self.driver != "pymongo":
            return False
        description = self.client.topology_description
        if description is not self._description_seen:  # a new one on every change
            self._writable = description.has_writable_server()
            self._description_seen = description
        return self._writable

    async def ping(self) -> None:
        await self.db.command("ping")

    async def close(self) -> None:
        result = self.client.close()
        if result is not None:  # AsyncMongoClient.close() is a coroutine; motor's is not
            await result

    async def transaction(self, work: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``work(session)`` in a transaction, committed with the write concern.

        A transient error (a write conflict with a concurrent transaction) aborts and
        runs ``work`` again from the start, while the deadline lasts.
        """
        for attempt in range(TRANSACTION_ATTEMPTS):
            session = self.client.start_session()
            if inspect.isawaitable(session):  # motor: a coroutine; PyMongo: the session
                session = await session
            ended_elsewhere = False
            try:
                await self.sessions.register(session.session_id)
                started = session.start_transaction(write_concern=self.write_concern)
                if inspect.isawaitable(started):  # PyMongo: a coroutine; motor: not
                    await started
                try:
                    result = await work(session)
                    await session.commit_transaction()
                    return result
                except BaseException as exc:
                    ended_elsewhere = await _abort(session, exc)
                    transient = isinstance(exc, PyMongoError) and _transient(exc)
                    if not transient:
                        raise
            finally:
                if not ended_elsewhere:
                    await _end(session)
            if attempt == TRANSACTION_ATTEMPTS - 1:
                break  # conflicts every time (another transaction holds the documents): a 503
            pause = random.uniform(0, 0.002 * (attempt + 1))  # noqa: S311 - jitter
            left = remaining()
            if left is not None and left <= pause:
                break
            await asyncio.sleep(pause)
        raise ServiceUnavailable(
            "The lead is being changed by other requests; retry",
            headers={"Retry-After": "1"},
        )


def _transient(exc: PyMongoError) -> bool:
    return exc.has_error_label("TransientTransactionError") and not exc.timeout


# Aborts still running in the background (a reference keeps each task alive).
_ABORTS: set[asyncio.Task[None]] = set()
ABORT_TIMEOUT_SECONDS = 5.0


async def _end(session: Any) -> None:
    with contextlib.suppress(PyMongoError):
        ended = session.end_session()
        if inspect.isawaitable(ended):
            await ended


async def _abort(session: Any, exc: BaseException) -> bool:
    """Abort the session's transaction, also when the request's time ran out.

    A transaction left open holds its documents: every later write of the same lead (or
    counter shard) would conflict until the server reaps it. PyMongo drops an abort it
    could not send, so after a timeout or a lost connection (the request's deadline is
    spent) the abort runs in the background with a budget of its own, outside the
    request's deadline, and ends the session there (returns True).
    """
    if not session.in_transaction:
        return False
    out_of_time = isinstance(exc, TimeoutError | ConnectionFailure | asyncio.CancelledError) or (
        isinstance(exc, PyMongoError) and exc.timeout
    )
    if not out_of_time:
        with contextlib.suppress(PyMongoError):
            await session.abort_transaction()
        return False

    async def abort_and_end() -> None:
        with pymongo.timeout(ABORT_TIMEOUT_SECONDS):
            with contextlib.suppress(PyMongoError):
                await session.abort_transaction()
            await _end(session)

    # A fresh context: no request deadline applies to it.
    task = asyncio.get_running_loop().create_task(abort_and_end(), context=contextvars.Context())
    _ABORTS.add(task)
    task.add_done_callback(_ABORTS.discard)
    return True


async def aggregate(
    collection: Any, pipeline: list[dict[str, Any]], **options: Any
) -> list[dict[str, Any]]:
    """Run a pipeline on either driver (motor returns its cursor, PyMongo a coroutine)."""
    cursor = collection.aggregate(pipeline, **options)
    if inspect.isawaitable(cursor):
        cursor = await cursor
    documents: list[dict[str, Any]] = await cursor.to_list(None)
    return documents


class StoreUnavailable(ServiceUnavailable):
    """The store did not answer in time, or could not be reached."""


def unavailable() -> StoreUnavailable:
    store_unavailable()  # the metric pollybot_store_errors_total, by timeout or unreachable
    return StoreUnavailable(
        "The database is unavailable; retry shortly",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def store_errors(func: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Turn driver failures into an AppError, so no driver message reaches a client.

    Unreachable, stalled and too-slow stores (and a query past its budget) are a 503
    with Retry-After; anything else the driver raises is a bug and stays one.
    """

    @functools.wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await func(*args, **kwargs)
        except (ConnectionFailure, TimeoutError) as exc:
            log.warning("database unreachable or too slow in %s: %s", func.__qualname__, exc)
            raise unavailable() from exc
        except PyMongoError as exc:
            if exc.timeout:  # also a server-side maxTimeMS expiry
                log.warning("database too slow in %s: %s", func.__qualname__, exc)
                raise unavailable() from exc
            if exc.has_error_label("TransientTransactionError"):
                # A conflict inside a transaction: its runner tries the whole of it again.
                log.debug("transient conflict in %s: %s", func.__qualname__, exc)
            elif isinstance(exc, OperationFailure):
                log.error("database refused %s: %s", func.__qualname__, exc)
            else:
                log.error("database error in %s: %r", func.__qualname__, exc)
            raise

    return wrapper
