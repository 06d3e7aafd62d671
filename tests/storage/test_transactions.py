"""Mongo.transaction: a write that keeps conflicting is a 503, never the driver's error."""

import inspect
from typing import Any

import pytest

from pollybot_leads.errors import ServiceUnavailable
from pollybot_leads.store.client import Mongo, store_deadline


async def maybe(value: Any) -> Any:
    """PyMongo and motor differ in which session calls are coroutines."""
    return await value if inspect.isawaitable(value) else value


async def test_a_transaction_that_always_conflicts_is_a_503(mongo: Mongo) -> None:
    """Another transaction holds the document (as one a killed server left open does):
    every attempt conflicts, and once they are spent the caller gets ServiceUnavailable
    (an HTTP 503 with Retry-After), not a WriteConflict (which would be a 500)."""
    things = mongo.db["transaction_conflicts"]
    await things.insert_one({"_id": "held", "n": 0})
    holder = await maybe(mongo.client.start_session())  # motor: a coroutine
    await maybe(holder.start_transaction())  # PyMongo: a coroutine
    try:
        await things.update_one({"_id": "held"}, {"$inc": {"n": 1}}, session=holder)
        attempts = 0

        async def work(session: object) -> None:
            nonlocal attempts
            attempts += 1
            await things.update_one({"_id": "held"}, {"$inc": {"n": 1}}, session=session)

        with store_deadline(20), pytest.raises(ServiceUnavailable) as raised:
            await mongo.transaction(work)
        assert raised.value.headers.get("Retry-After") == "1"
        assert attempts > 1  # a conflict is retried
    finally:
        await holder.abort_transaction()
        await maybe(holder.end_session())
    assert (await things.find_one({"_id": "held"}))["n"] == 0
