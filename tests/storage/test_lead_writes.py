"""Writes committed together (group commits) keep each lead's bookkeeping its own."""

import asyncio

from pollybot_leads.errors import LeadNotFound
from tests.conftest import make_tenant


async def test_updates_committed_together_count_on_the_leads_own_chatbot(leads_repo, accounts):
    ours, theirs = await make_tenant(accounts), await make_tenant(accounts)
    lead = await leads_repo.create(
        chatbot_id=ours.chatbot_id,
        workspace_id=ours.workspace_id,
        fields={"name": "Ada Lovelace", "email": "ada@example.com"},
    )
    lead_id = lead["id"]
    # The first is written alone; the next two queue behind it and commit together,
    # the other chatbot's first in that batch.
    results = await asyncio.gather(
        leads_repo.update(chatbot_id=ours.chatbot_id, lead_id=lead_id, changes={"phone": "1"}),
        leads_repo.update(
            chatbot_id=theirs.chatbot_id, lead_id=lead_id, changes={"status": "lost"}
        ),
        leads_repo.update(
            chatbot_id=ours.chatbot_id, lead_id=lead_id, changes={"status": "qualified"}
        ),
        return_exceptions=True,
    )
    assert results[0]["phone"] == "1"
    assert isinstance(results[1], LeadNotFound)
    assert results[2]["status"] == "qualified" and results[2]["phone"] == "1"
    counts = await leads_repo.read_counts(ours.chatbot_id)
    assert counts["total"] == 1
    assert counts["byStatus"]["qualified"] == 1 and counts["byStatus"]["new"] == 0
    other = await leads_repo.read_counts(theirs.chatbot_id)
    assert other["total"] == 0 and set(other["byStatus"].values()) == {0}
