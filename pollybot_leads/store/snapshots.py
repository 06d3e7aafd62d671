"""Reading several collections as of one moment: a read-only snapshot transaction.

Every lead write commits its lead, its counters and its event in one transaction
(leads/transaction.py), so a reader that sees all of one moment sees them agree. Such
a reader is a transaction with read concern ``snapshot``: its first read pins a
snapshot, and every later read in it, of any collection and through every batch of a
cursor, sees that snapshot and nothing committed after it. It writes nothing, so it
never conflicts with the writers (who go on committing) and commits at the end.

Why a transaction and not a snapshot session (``start_session(snapshot=True)``, reads
outside a transaction at one ``atClusterTime``): the embedded store accepts a snapshot
session and answers its reads with an ``atClusterTime``, but does not pin them (each
read sees the latest commits; store/quirks.py, tests/storage/test_snapshots.py); a
transaction's reads it does pin. On ``mongod`` both work, and a transaction holds its
snapshot for its whole life (``transactionLifetimeLimitSeconds``, 60 s by default),
where a snapshot session's reads fail once their time is older than
``minSnapshotHistoryWindowInSeconds`` (5 s). The embedded store ends a transaction only after
60 s without a statement, so a long reader that keeps reading keeps its snapshot.

Holding a snapshot keeps the store from discarding the versions written since (on
the embedded store the history it pins makes every later write dearer, docs/load.md): keep each
snapshot to one unit of work (one chatbot's documents), not the whole database.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pymongo.errors import PyMongoError
from pymongo.read_concern import ReadConcern

from .client import Mongo

log = logging.getLogger(__name__)

T = TypeVar("T")

# A snapshot that conflicts (a transient error: the store aborted it) is taken again.
SNAPSHOT_ATTEMPTS = 5
RETRY_PAUSE_SECONDS = 0.2


async def in_snapshot(mongo: Mongo, read: Callable[[Any], Awaitable[T]]) -> T:
    """``read(session)``: every read it makes with ``session`` sees one snapshot.

    On a transient error (the store aborted the transaction) ``read`` runs again from the
    start with a new snapshot, at most SNAPSHOT_ATTEMPTS times: it must undo whatever it
    did with the documents of an earlier attempt.
    """
    for attempt in range(1, SNAPSHOT_ATTEMPTS + 1):
        session = mongo.client.start_session()
        if inspect.isawaitable(session):  # motor: a coroutine; PyMongo: the session
            session = await session
        try:
            started = session.start_transaction(read_concern=ReadConcern("snapshot"))
            if inspect.isawaitable(started):  # PyMongo: a coroutine; motor: not
                await started
            try:
                result = await read(session)
                await session.commit_transaction()  # writes nothing: ends the snapshot
                return result
            except BaseException as exc:
                if session.in_transaction:
                    with contextlib.suppress(PyMongoError):
                        await session.abort_transaction()
                transient = isinstance(exc, PyMongoError) and exc.has_error_label(
                    "TransientTransactionError"
                )
                if not transient or attempt == SNAPSHOT_ATTEMPTS:
                    raise
                log.warning("snapshot read aborted by the store (%s): reading again", exc)
        finally:
            with contextlib.suppress(PyMongoError):
                ended = session.end_session()
                if inspect.isawaitable(ended):
                    await ended
        await asyncio.sleep(RETRY_PAUSE_SECONDS * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


class SessionCollection:
    """A collection whose finds run in ``session``: for readers that take a collection
    (store/reads.py) to read inside a snapshot."""

    def __init__(self, collection: Any, session: Any) -> None:
        self._collection = collection
        self._session = session

    @property
    def name(self) -> str:
        name: str = self._collection.name
        return name

    @property
    def database(self) -> Any:
        return self._collection.database

    def find(self, *args: Any, **kwargs: Any) -> Any:
        return self._collection.find(*args, session=self._session, **kwargs)

    def aggregate(self, *args: Any, **kwargs: Any) -> Any:
        return self._collection.aggregate(*args, session=self._session, **kwargs)
