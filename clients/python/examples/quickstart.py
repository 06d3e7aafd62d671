"""Create a lead, list with filters, update it with If-Match, and see a stale update
refused. Reads POLLYBOT_API_KEY, POLLYBOT_CHATBOT_ID and POLLYBOT_BASE_URL."""

from __future__ import annotations

import os

from pollybot_leads_client import Client, Lead, PreconditionFailedError


def main() -> None:
    bot = os.environ["POLLYBOT_CHATBOT_ID"]
    base_url = os.environ.get("POLLYBOT_BASE_URL", "http://127.0.0.1:8080")
    with Client(api_key=os.environ["POLLYBOT_API_KEY"], base_url=base_url) as c:
        lead: Lead = c.leads.create(
            bot,
            name="Grace Hopper",
            email="grace@example.com",
            phone="+1 415 555 2671",
            source="website",
            metadata={"plan": "pro"},
        )
        print("created", lead.id, lead.phone_e164, lead.created_at.isoformat())
        for each in c.leads.list(bot, source="website", status="new", search="grace"):
            print("listed", each.id, each.email)
        contacted = c.leads.update(bot, lead.id, if_match=lead.etag, status="contacted")
        print("updated", contacted.status)
        try:  # lead.etag is the version before that update: refused, nothing changed
            c.leads.update(bot, lead.id, if_match=lead.etag, status="lost")
        except PreconditionFailedError as error:
            print("refused", error.status, error.code)


if __name__ == "__main__":
    main()
