"""Moving off the embedded store, as docs/operations.md ("Backup, restore, moving
stores") says: `serve` on its embedded SecantusDB, `admin dump` from it while it serves,
`admin restore` into a second store process (an external MongoDB-wire store), `serve`
on that one. Every process is real; each is stopped however the test ends."""

from __future__ import annotations

import json
import os
from pathlib import Path

from aiohttp import ClientSession

from pollybot_leads.store.embedded import free_port
from tests.faults.harness import ApiServer, Store, direct_db, server_env

from .backup_checks import (
    Writer,
    assert_consistent,
    assert_feed_prefix,
    dump_under_writes,
    new_event_continues,
    run_cli,
    view,
)

MOVED = "pollybot_leads"  # the database on the new store


def embedded_env(data_dir: Path) -> dict[str, str]:
    """`serve` and the admin commands on the embedded store (no MONGODB_URI)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MONGODB_URI", "MONGODB_DATABASE", "REDIS_URL", "PORT", "HOST")
    }
    env.update(
        PB_DATA_DIR=str(data_dir),
        PB_EMBEDDED_PORT=str(free_port()),
        PB_CONFIG="test",
        LOG_LEVEL="WARNING",
    )
    return env


async def test_the_embedded_store_moves_to_another_store_with_its_keys_and_etags(tmp_path):
    data_dir = tmp_path / "var"
    embedded = embedded_env(data_dir)
    old = ApiServer(free_port(), embedded, tmp_path / "old.log")
    new_store = Store(tmp_path / "new-store", free_port())
    new: ApiServer | None = None
    old.start()  # starts the embedded store, and makes the demo workspace, chatbot and key
    try:
        demo = json.loads((data_dir / "demo-credentials.json").read_text())
        chatbot_id, headers = demo["chatbotId"], {"Authorization": f"Bearer {demo['key']}"}
        leads_url = f"/api/v1/chatbots/{chatbot_id}/leads"
        code, second, err = await run_cli(
            "admin",
            "create-key",
            "--workspace",
            demo["workspaceId"],
            "--rate-limit-capacity",
            "500",
            "--rate-limit-refill",
            "50",
            env=embedded,
        )
        assert code == 0, (second, err)
        second_headers = {"Authorization": f"Bearer {second['key']}"}

        async with ClientSession(base_url=old.base_url) as http:
            for start in range(0, 300, 100):
                items = [
                    {"name": f"Moved {i}", "email": f"moved{i}@example.com", "metadata": {"i": i}}
                    for i in range(start, start + 100)
                ]
                resp = await http.post(leads_url + "/batch", json={"leads": items}, headers=headers)
                assert resp.status < 300, await resp.text()
            resp = await http.post(
                "/api/v1/webhooks", json={"url": "https://example.com/hooks"}, headers=headers
            )
            assert resp.status == 201
            webhook = (await resp.json())["data"]

            # The dump, from the store `serve` runs, while leads are created (creates only:
            # every lead in the dump is then still the same on the old server).
            writer = Writer(http, [(chatbot_id, headers)], creates_only=True).start()
            dump = await dump_under_writes(
                writer, acked_first=20, out=str(tmp_path / "dump"), env=embedded
            )
            code, dumped, err = dump.code, dump.summary, dump.err
            assert code == 0, (dumped, err)
            assert dump.acked_during > 0  # served throughout
            assert not writer.failed, writer.failed[:5]

            new_store.start()
            target = {**embedded, "MONGODB_URI": new_store.uri, "MONGODB_DATABASE": MOVED}
            code, restored, err = await run_cli(
                "admin", "restore", "--from", str(tmp_path / "dump"), env=target
            )
            assert code == 0, (restored, err)
            assert restored["collections"] == dumped["collections"]

            new = ApiServer(free_port(), server_env(new_store.uri, MOVED), tmp_path / "new.log")
            new.start()
            dumped_ids = [
                json.loads(line)["_id"]
                for line in (tmp_path / "dump" / "leads.jsonl").read_text().splitlines()
            ]
            assert len(dumped_ids) == dumped["collections"]["leads"] >= 300
            async with ClientSession(base_url=new.base_url) as moved:
                for lead_id in dumped_ids:  # the same key; the same body and ETag
                    before = await http.get(f"{leads_url}/{lead_id}", headers=headers)
                    after = await moved.get(f"{leads_url}/{lead_id}", headers=headers)
                    assert before.status == after.status == 200
                    assert await after.json() == await before.json()
                    assert after.headers["ETag"] == before.headers["ETag"]

                chatbot = await view(moved, chatbot_id, headers)
                assert_consistent(chatbot)
                assert set(chatbot.leads) == set(dumped_ids)
                source = await view(http, chatbot_id, headers)
                assert_feed_prefix(source, chatbot)

                resp = await moved.get(leads_url, params={"limit": "1"}, headers=second_headers)
                assert resp.status == 200 and resp.headers["X-RateLimit-Limit"] == "500"
                resp = await moved.get(f"/api/v1/webhooks/{webhook['id']}", headers=headers)
                assert resp.status == 200
                assert (await resp.json())["data"]["url"] == webhook["url"]
                await new_event_continues(moved, chatbot_id, headers)

        async with direct_db(new_store.uri, MOVED) as db:
            stored = await db["webhooks"].find_one({"_id": webhook["id"]})
        assert stored["secrets"][0]["value"] == webhook["secret"]  # it signs as before
    finally:
        if new is not None:
            new.stop()
        new_store.discard()
        old.stop()  # and its embedded store with it
