"""The MongoDB driver, chosen by one setting. The only module that imports a driver."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

from ..errors import ServiceUnavailable

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

SERVER_SELECTION_TIMEOUT_MS = 5000


class Mongo:
    """A connected client and database, whichever driver is behind them."""

    def __init__(self, uri: str, database: str, driver: str = "motor") -> None:
        options: dict[str, Any] = {
            "tz_aware": True,
            "serverSelectionTimeoutMS": SERVER_SELECTION_TIMEOUT_MS,
            "connectTimeoutMS": 5000,
            "appname": "pollybot-leads",
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

    async def ping(self) -> None:
        await self.db.command("ping")

    async def close(self) -> None:
        result = self.client.close()
        if result is not None:  # AsyncMongoClient.close() is a coroutine; motor's is not
            await result


async def aggregate(collection: Any, pipeline: list[dict], **options: Any) -> list[dict]:
    """Run a pipeline on either driver (motor returns its cursor, PyMongo a coroutine)."""
    cursor = collection.aggregate(pipeline, **options)
    if inspect.isawaitable(cursor):
        cursor = await cursor
    return await cursor.to_list(None)


def store_errors(func: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Turn driver failures into an AppError, so no driver message reaches a client."""

    @functools.wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await func(*args, **kwargs)
        except ConnectionFailure as exc:
            log.warning("database unreachable in %s: %s", func.__qualname__, exc)
            raise ServiceUnavailable("The database is unavailable; retry shortly") from exc
        except OperationFailure as exc:
            log.error("database refused %s: %s", func.__qualname__, exc)
            raise
        except PyMongoError as exc:
            log.error("database error in %s: %r", func.__qualname__, exc)
            raise

    return wrapper
