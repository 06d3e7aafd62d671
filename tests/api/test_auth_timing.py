"""A 404 for another workspace's chatbot and one for a chatbot that does not exist cost
the same: both answers are cached, so the time of a 404 does not tell whether an id
exists."""

from __future__ import annotations

import pytest

from pollybot_leads.accounts.auth import authenticator_key

from .helpers import error_of


@pytest.fixture
def store_lookups(api):
    accounts = api.app[authenticator_key]._accounts
    original = accounts.chatbot_workspace
    asked: list[str] = []

    async def counting(*, chatbot_id: str):
        asked.append(chatbot_id)
        return await original(chatbot_id=chatbot_id)

    accounts.chatbot_workspace = counting
    yield asked
    del accounts.chatbot_workspace


async def test_absent_and_foreign_chatbots_are_both_answered_from_the_cache(
    api, tenant, other_tenant, store_lookups
):
    absent = "cb_" + "0" * 15 + "1"
    for chatbot_id in (absent, other_tenant.chatbot_id):
        for _ in range(3):
            resp = await api.get(f"/api/v1/chatbots/{chatbot_id}/leads", headers=tenant.headers)
            await error_of(resp, 404, "CHATBOT_NOT_FOUND")
    assert store_lookups == [absent, other_tenant.chatbot_id]  # once each, then cached
