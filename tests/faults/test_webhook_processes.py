"""Webhook delivery across a crash: the API server, delivering in the background, is
SIGKILLed mid-delivery under a stream of creates and started again. A local receiver
verifies every delivery with the `standardwebhooks` package; every committed event must
reach it (none lost), and an event may arrive twice only under its own webhook-id."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, web
from standardwebhooks import Webhook, WebhookVerificationError

from pollybot_leads.settings import CONFIG_DIR
from pollybot_leads.store.embedded import free_port
from tests.faults.harness import (
    ApiServer,
    Load,
    Store,
    Tenant,
    direct_db,
    server_env,
    summarize,
)
from tests.webhooks.receiver import Receiver

HOLD_SECONDS = 0.1  # the receiver answers after this: deliveries are in flight at the kill


class VerifyingReceiver(Receiver):
    """Accepts a delivery only when its Standard Webhooks signature verifies."""

    def __init__(self) -> None:
        super().__init__()
        self.secret = ""
        self.arrivals: Counter[str] = Counter()  # webhook-id -> deliveries received
        self.event_ids: dict[str, set[str]] = {}  # webhook-id -> the event ids it carried
        self.invalid = 0
        self.holding = 0  # received, not yet answered

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            event = Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError:
            self.invalid += 1
            return web.Response(status=400)
        msg_id = headers["webhook-id"]
        self.arrivals[msg_id] += 1
        self.event_ids.setdefault(msg_id, set()).add(event["id"])
        self.holding += 1
        try:
            await asyncio.sleep(HOLD_SECONDS)
        finally:
            self.holding -= 1
        return web.Response(status=204)


def delivering_env(store: Store, database: str, config_dir: Path) -> dict[str, str]:
    """The fault tests' server settings, delivering in the background with short leases
    (a 2 s timeout + 2 s: what the killed process had in flight is due again soon)."""
    config_dir.mkdir()
    shutil.copy(CONFIG_DIR / "default.toml", config_dir / "default.toml")
    test_toml = (CONFIG_DIR / "test.toml").read_text()
    assert "\ndeliver = false\n" in test_toml
    test_toml = test_toml.replace(
        "\ndeliver = false\n",
        # Delivery gives way to the creates (store_share_under_load): a larger share
        # than the default, so that deliveries are in flight under the stream of creates.
        "\ndeliver = true\ntimeout_seconds = 2\nlease_margin_seconds = 2\n"
        "store_share_under_load = 0.5\n",
    )
    (config_dir / "test.toml").write_text(test_toml)
    return {**server_env(store.uri, database), "PB_CONFIG_DIR": str(config_dir)}


async def wait_until(check: Any, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if await check():
            return True
        await asyncio.sleep(0.1)
    return False


async def test_a_server_killed_mid_delivery_loses_no_event(
    store: Store, database: str, tenant: Tenant, http: ClientSession, tmp_path: Path
):
    env = delivering_env(store, database, tmp_path / "config")
    server = ApiServer(free_port(), env, tmp_path / "server.log")
    receiver = await VerifyingReceiver().start()
    server.start()
    load: Load | None = None
    try:
        async with http.post(
            server.base_url + "/api/v1/webhooks", json={"url": receiver.url}, headers=tenant.headers
        ) as resp:
            assert resp.status == 201, await resp.text()
            receiver.secret = (await resp.json())["data"]["secret"]
        load = Load(
            http, server.base_url, tenant, mix={"create": 1}, workers=8, max_seconds=30
        ).start()

        async def some_arrived() -> bool:
            return len(receiver.arrivals) >= 10 and receiver.holding > 0

        assert await wait_until(some_arrived, timeout=20), server.log_tail()
        in_flight_at_kill = receiver.holding
        arrived_at_kill = len(receiver.arrivals)
        server.kill()  # SIGKILL: its leases stay; its unanswered sends are lost to it
        await asyncio.sleep(0.5)  # creates fail meanwhile (connection refused)
        server.start()
        restarted = time.monotonic()

        async def created_again() -> bool:
            return any(o.status == 201 and o.started > restarted for o in load.outcomes)

        # Creates go on against the new process (those that need a document the killed
        # process's open transaction held wait until the store ends it).
        await wait_until(created_again, timeout=5)
        await load.stop()
        after = summarize(o for o in load.outcomes if o.started > restarted)

        async def committed_events() -> list[dict[str, Any]]:
            async with direct_db(store.uri, database) as db:
                return await db["events"].find({"chatbotId": tenant.chatbot_id}).to_list(None)

        # The load has stopped and the killed process's transactions cannot commit any
        # more: the committed events are all there. Read once (a read of them all every
        # 0.1 s would take the store's time from the deliveries being waited for).
        committed = [e["_id"] for e in await committed_events()]

        async def all_arrived() -> bool:
            return all(i in receiver.arrivals for i in committed)

        await wait_until(all_arrived, timeout=60)
        await asyncio.sleep(1.0)  # a late duplicate would show now
        events = await committed_events()
        lost = [e["_id"] for e in events if e["_id"] not in receiver.arrivals]
        duplicates = sum(n - 1 for n in receiver.arrivals.values())
        print(
            f"\nwebhooks, server SIGKILLed mid-delivery: {len(events)} events committed, "
            f"{arrived_at_kill} arrived before the kill, {in_flight_at_kill} in flight at it; "
            f"{len(lost)} lost, {duplicates} delivered twice (same webhook-id), "
            f"{receiver.invalid} bad signatures; requests after the restart: {after}"
        )
        assert in_flight_at_kill > 0  # the kill did come mid-delivery
        assert lost == [], server.log_tail()
        assert receiver.invalid == 0
        # A duplicate is the same event under its own id: never another id for it.
        assert all(ids == {msg_id} for msg_id, ids in receiver.event_ids.items())
        assert set(receiver.arrivals) == {e["_id"] for e in events}  # nothing uncommitted
        # Every create the client saw acknowledged is among them.
        created = {e["data"]["lead"]["id"] for e in events if e["type"] == "lead.created"}
        assert set(load.acked) <= created
    finally:
        if load is not None:
            await load.stop()
        server.stop()
        await receiver.stop()
