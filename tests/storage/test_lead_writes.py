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


async def test_a_create_whose_id_is_taken_gets_another(leads_repo, accounts, monkeypatch):
    """Creates are inserted in batches (insert_many); a colliding id is drawn again."""
    from pollybot_leads.domain import ids

    tenant = await make_tenant(accounts)
    fields = {"name": "Grace Hopper", "email": "grace@example.com"}
    first = await leads_repo.create(
        chatbot_id=tenant.chatbot_id, workspace_id=tenant.workspace_id, fields=fields
    )
    draws = iter([first["id"]])  # the next id drawn is one that exists
    real = ids.new_id
    monkeypatch.setattr(ids, "new_id", lambda prefix: next(draws, None) or real(prefix))
    second = await leads_repo.create(
        chatbot_id=tenant.chatbot_id, workspace_id=tenant.workspace_id, fields=fields
    )
    assert second["id"] != first["id"]
    assert (await leads_repo.get(chatbot_id=tenant.chatbot_id, lead_id=first["id"]))[
        "createdAt"
    ] == first["createdAt"]
    assert (await leads_repo.read_counts(tenant.chatbot_id))["total"] == 2
