"""Erasing a person: every lead of a workspace with one email or phone, in all its
chatbots, deleted as a ``DELETE`` would (leads/transaction.py, ERASE), and optionally the
address suppressed so that it is not captured again.

The suppression is committed first, then each chatbot's leads are deleted in
transactions of up to ERASE_CHUNK leads; the last transaction of a chatbot (the one that
finds none left) writes the chatbot's event sequence even when it deletes nothing. A
create in another process whose transaction began before the suppression was committed
(and so did not see it) writes that sequence too: the two conflict, and whichever runs
again sees the other -- the create then meets the suppression (422), or the erasure
meets the lead and deletes it. So once an erasure with ``suppress`` has answered, no
lead with the address is left in the workspace, and none can be stored.

Each transaction has the request budget of its own (the request runs in steps, as an
export does: http/deadline.py): an erasure of many leads takes as many budgets, and a
store that fails one of them ends the request with a 503, the leads erased so far staying
erased (their events and audit records say so) and a retry erasing the rest.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from ..accounts.repository import AccountRepository
from ..leads.repository import LeadRepository
from ..leads.suppressions import COMPARED_FIELD, PHONE, normalized
from ..leads.writes import Erased

T = TypeVar("T")
Step = Callable[[Callable[[], Awaitable[T]]], Awaitable[T]]


@dataclass(frozen=True)
class Erasure:
    lead_ids: list[str]
    suppressed: bool


async def _at_once(work: Callable[[], Awaitable[T]]) -> T:
    return await work()


async def erase(
    leads: LeadRepository,
    accounts: AccountRepository,
    *,
    workspace_id: str,
    kind: str,
    address: str,
    suppress: bool,
    audit: dict[str, Any],
    step: Step[Any] = _at_once,
) -> Erasure:
    """Erase the person with this email or phone (``kind``) from the workspace; ``step``
    runs each store step (with a budget of its own, in a request)."""
    value = normalized(kind, address)
    assert value is not None, "validated: a phone has a digit"
    match = {COMPARED_FIELD[kind]: value}
    if suppress:
        await step(lambda: leads.suppressions.add(workspace_id, kind, value))
    chatbots: list[str] = await step(lambda: accounts.chatbot_ids(workspace_id=workspace_id))
    erased: list[str] = []
    for chatbot_id in chatbots:
        here = match
        if kind == PHONE and not address.lstrip().startswith("+"):
            # A number without "+" reads as the chatbot's leads' phones did: in its region.
            region: str | None = await step(partial(leads.regions.of, chatbot_id))
            local = normalized(kind, address, region)
            here = {COMPARED_FIELD[kind]: local} if local is not None else match

        async def chunk(chatbot_id: str = chatbot_id, here: dict[str, str] = here) -> Erased:
            return await leads.erase(
                chatbot_id=chatbot_id, workspace_id=workspace_id, match=here, audit=audit
            )

        while True:
            done: Erased = await step(chunk)
            erased += done.lead_ids
            if not done.more:
                break
    return Erasure(erased, suppressed=suppress)
