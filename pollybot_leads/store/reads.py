"""The reads of one windowed or paged query, each explained first when asked.

``Reads`` sends the finds and counts of a plan (store/plans.py) to one collection; with
``explain`` it asks the server for the explanation (executionStats) of each before it
runs it, so that tests can check what every read examined.
"""

from __future__ import annotations

import heapq
from typing import Any

from .client import aggregate
from .ranges import sort_key

READ_BATCH = 100_000  # candidates come back in one batch (the server caps it at 16 MiB)


class Reads:
    """The queries of one read, sent to ``collection``; with ``plans`` (a list), each is
    explained (executionStats) before it runs, and the explanation appended to it."""

    def __init__(self, collection: Any, plans: list[dict[str, Any]] | None = None) -> None:
        self._collection = collection
        self.plans = plans

    async def _explain(self, command: dict[str, Any]) -> None:
        if self.plans is not None:
            db = self._collection.database
            self.plans.append(await db.command("explain", command, verbosity="executionStats"))

    async def find(
        self,
        filter_: dict[str, Any],
        projection: dict[str, int],
        *,
        sort: list[tuple[str, int]] | None = None,
        skip: int = 0,
        limit: int = 0,
    ) -> list[dict[str, Any]]:
        command: dict[str, Any] = {"find": self._collection.name, "filter": filter_}
        command["projection"] = projection
        if sort:
            command["sort"] = dict(sort)
        if skip:
            command["skip"] = skip
        if limit:
            command["limit"] = limit
        await self._explain(command)
        cursor = self._collection.find(
            filter_, projection, sort=sort, skip=skip, limit=limit, batch_size=limit or READ_BATCH
        )
        docs: list[dict[str, Any]] = await cursor.to_list(None)
        return docs

    async def ids(self, filter_: dict[str, Any], *, limit: int = 0) -> set[Any]:
        return {doc["_id"] for doc in await self.find(filter_, {"_id": 1}, limit=limit)}

    async def count(self, filter_: dict[str, Any], *, limit: int = 0) -> int:
        # $match + $count rather than count_documents ($group): the same result, and
        # cheaper on some stores (docs/stores.md).
        pipeline: list[dict[str, Any]] = [{"$match": filter_}]
        if limit:
            pipeline.append({"$limit": limit})
        pipeline.append({"$count": "n"})
        await self._explain(
            {"aggregate": self._collection.name, "pipeline": pipeline, "cursor": {}}
        )
        rows = await aggregate(self._collection, pipeline)
        return rows[0]["n"] if rows else 0


def merge_runs(
    runs: list[list[dict[str, Any]]], field: str, direction: int
) -> list[dict[str, Any]]:
    """Runs each in sort order, merged into one; a document found by two runs appears once."""
    key = sort_key(field)
    merged: list[dict[str, Any]] = []
    for doc in heapq.merge(*runs, key=key, reverse=direction < 0):
        if not merged or merged[-1]["_id"] != doc["_id"]:  # equal keys are adjacent
            merged.append(doc)
    return merged
