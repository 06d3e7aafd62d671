"""The storage tests' shared data set: seeded once per session, used by the list-plan
and export-read tests (both explain their reads beside a chatbot with many leads)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from pollybot_leads.leads.indexes import LEAD_INDEXES

from .test_query_plans import BIG, NOW, SMALL, START, seeded


@pytest.fixture(scope="session")
async def tenants(accounts, leads_repo) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, n, seed in (("big", BIG, 1), ("small", SMALL, 2)):
        workspace = await accounts.create_workspace(name=name)
        chatbot = await accounts.create_chatbot(workspace_id=workspace["id"], name=name)
        docs = seeded(chatbot["id"], workspace["id"], n, NOW - START, seed)
        for start in range(0, n, 1000):
            await leads_repo.insert_many(docs=docs[start : start + 1000])
        await leads_repo.recount(chatbot_id=chatbot["id"])
        out[name] = chatbot["id"]
        out[f"{name}_docs"] = docs
    return out


@pytest.fixture(scope="session")
async def plain_copy(mongo, tenants) -> AsyncIterator[Any]:
    """The small chatbot's leads alone in a collection of their own, with the same
    indexes: there the plain single queries ($in, $all, $and) are cheap on any store."""
    leads = mongo.db[f"leads_plain_{tenants['small']}"]
    await leads.create_indexes(LEAD_INDEXES)
    await leads.insert_many([dict(d) for d in tenants["small_docs"]])
    yield leads
    await leads.drop()
