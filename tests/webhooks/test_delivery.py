"""Deliveries to real receivers, verified with an independent implementation: the
`standardwebhooks` package for the Standard Webhooks headers, plain hmac for PollyBot's."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import re
import time

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from pollybot_leads import __version__
from pollybot_leads.accounts.repository import AccountRepository
from pollybot_leads.leads.event_log import LEAD_DELETED, LEAD_UPDATED
from tests.api.helpers import data_of
from tests.conftest import database_of, make_tenant, serving

from .conftest import FAST, a_lead, emit
from .receiver import Answer, Receiver, wait_until


async def create_endpoint(api, tenant, url: str, **fields) -> dict:
    resp = await api.post("/api/v1/webhooks", json={"url": url, **fields}, headers=tenant.headers)
    return await data_of(resp, 201)


async def attempts_of(api, tenant, webhook_id: str) -> list[dict]:
    url = f"/api/v1/webhooks/{webhook_id}/deliveries"
    return (await data_of(await api.get(url, headers=tenant.headers)))["deliveries"]


def pollybot_valid(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """PollyBot's scheme: HMAC-SHA256(secret string, body + timestamp), any one listed."""
    timestamp = headers["X-Webhook-Timestamp"]
    expected = hmac.new(secret.encode(), body + timestamp.encode(), hashlib.sha256).hexdigest()
    listed = [s.strip() for s in headers["X-Webhook-Signature"].split(",")]
    return any(hmac.compare_digest(s, "sha256=" + expected) for s in listed)


async def test_a_delivery_is_the_feed_event_signed_both_ways(
    api, mongo, tenant, receiver, run_worker
):
    endpoint = await create_endpoint(api, tenant, receiver.url)
    secret = endpoint["secret"]
    [event] = await emit(mongo, tenant, data={"lead": a_lead(tenant, metadata={"a": [1]})})
    run_worker()
    [got] = await receiver.wait_for(1)

    payload = Webhook(secret).verify(got.body, got.headers)  # raises when it does not verify
    feed = await data_of(
        await api.get(f"/api/v1/chatbots/{tenant.chatbot_id}/events", headers=tenant.headers)
    )
    assert payload == feed["events"][0]
    assert payload["id"] == event["_id"] == got.headers["webhook-id"]
    assert payload["event"] == "LEAD_CREATED" and payload["type"] == "lead.created"
    assert payload["data"]["lead"]["metadata"] == {"a": [1]}
    assert pollybot_valid(secret, got.headers, got.body)
    assert got.headers["X-Webhook-Timestamp"] == got.headers["webhook-timestamp"]
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 10
    assert got.headers["User-Agent"] == f"PollyBot-Leads-Webhooks/{__version__}"
    assert got.headers["Content-Type"] == "application/json"
    # Another secret, or a changed body, does not verify.
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 43 + "=").verify(got.body, got.headers)
    assert not pollybot_valid(secret, got.headers, got.body + b" ")

    await wait_until(lambda: True)
    log = []

    async def logged() -> bool:
        log[:] = await attempts_of(api, tenant, endpoint["id"])
        return bool(log)

    await _eventually(logged)
    assert log[0]["eventId"] == event["_id"] and log[0]["statusCode"] == 200
    assert log[0]["outcome"] == "delivered" and log[0]["nextAttemptAt"] is None
    assert log[0]["error"] is None and log[0]["attempt"] == 1 and log[0]["durationMs"] >= 0


async def _eventually(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_events_reach_only_the_endpoints_that_subscribe(api, mongo, accounts, run_worker):
    tenant, other = await make_tenant(accounts), await make_tenant(accounts)
    second = await accounts.create_chatbot(workspace_id=tenant.workspace_id, name="Second")
    receivers = [await Receiver().start() for _ in range(3)]
    try:
        await create_endpoint(api, tenant, receivers[0].url, events=["lead.deleted"])
        await create_endpoint(api, tenant, receivers[1].url, chatbotIds=[second["id"]])
        await create_endpoint(api, other, receivers[2].url)  # another workspace
        await emit(mongo, tenant)  # lead.created of the first chatbot
        deleted = await emit(mongo, tenant, LEAD_DELETED, {"lead": {"id": "lead_" + "0" * 16}})
        run_worker()
        [got] = await receivers[0].wait_for(1)
        assert json.loads(got.body)["id"] == deleted[0]["_id"]
        assert json.loads(got.body)["data"] == {"lead": {"id": "lead_" + "0" * 16}}
        await asyncio.sleep(0.3)
        assert len(receivers[0].received) == 1
        assert receivers[1].received == [] and receivers[2].received == []
    finally:
        for r in receivers:
            await r.stop()


async def test_a_receiver_that_is_down_gets_the_event_when_it_comes_back(
    api, mongo, tenant, run_worker
):
    receiver = Receiver()  # not started: connections are refused
    endpoint = await create_endpoint(api, tenant, receiver.url)
    [event] = await emit(mongo, tenant)
    run_worker()

    async def failed_twice() -> bool:
        return len(await attempts_of(api, tenant, endpoint["id"])) >= 2

    await _eventually(failed_twice)
    await receiver.start()
    try:
        [got] = await receiver.wait_for(1)
        assert got.headers["webhook-id"] == event["_id"]
        await asyncio.sleep(0.2)
        log = await attempts_of(api, tenant, endpoint["id"])
        assert log[0]["outcome"] == "delivered"
        failures = [a for a in log if a["outcome"] == "retrying"]
        assert failures and all(a["statusCode"] is None for a in failures)
        assert all("Connection failed" in a["error"] and a["nextAttemptAt"] for a in failures)
        assert [a["attempt"] for a in reversed(log)] == list(range(1, len(log) + 1))
    finally:
        await receiver.stop()


async def test_errors_are_retried_and_each_attempt_logged(api, mongo, tenant, receiver, run_worker):
    receiver.answers = [Answer(500), Answer(302, {"Location": "/elsewhere"}), Answer(204)]
    endpoint = await create_endpoint(api, tenant, receiver.url)
    await emit(mongo, tenant)
    run_worker()
    got = await receiver.wait_for(3)
    await asyncio.sleep(0.3)
    assert len(got) == 3  # the redirect was not followed; the 204 ended it
    assert len({r.headers["webhook-id"] for r in got}) == 1
    log = await attempts_of(api, tenant, endpoint["id"])
    assert [(a["statusCode"], a["outcome"]) for a in log] == [
        (204, "delivered"),
        (302, "retrying"),
        (500, "retrying"),
    ]


async def test_retry_after_is_honoured_on_429(api, mongo, tenant, receiver, run_worker):
    receiver.answers = [Answer(429, {"Retry-After": "1"})]
    endpoint = await create_endpoint(api, tenant, receiver.url)
    await emit(mongo, tenant)
    run_worker()  # its own schedule would retry after 0.05 s
    first, second = await receiver.wait_for(2, timeout=5)
    assert second.at - first.at >= 0.95
    log = await attempts_of(api, tenant, endpoint["id"])
    assert log[-1]["statusCode"] == 429 and log[-1]["outcome"] == "retrying"


async def test_410_disables_the_endpoint_until_it_is_enabled_again(
    api, mongo, tenant, receiver, run_worker
):
    receiver.answers = [Answer(410)]
    endpoint = await create_endpoint(api, tenant, receiver.url)
    url = f"/api/v1/webhooks/{endpoint['id']}"
    await emit(mongo, tenant)
    run_worker()
    await receiver.wait_for(1)

    async def disabled() -> bool:
        return not (await data_of(await api.get(url, headers=tenant.headers)))["enabled"]

    await _eventually(disabled)
    shown = await data_of(await api.get(url, headers=tenant.headers))
    assert "410" in shown["disabledReason"]
    await emit(mongo, tenant)  # not queued for a disabled endpoint
    await asyncio.sleep(0.3)
    assert len(receiver.received) == 1
    log = await attempts_of(api, tenant, endpoint["id"])
    assert [(a["statusCode"], a["outcome"]) for a in log] == [(410, "disabled")]

    resp = await api.put(url, json={"enabled": True}, headers=tenant.headers)
    assert (await data_of(resp))["disabledReason"] is None
    [later] = await emit(mongo, tenant)
    got = await receiver.wait_for(2)
    assert got[1].headers["webhook-id"] == later["_id"]


async def test_a_hanging_receiver_times_out_and_is_retried(
    api, mongo, tenant, receiver, run_worker
):
    receiver.answers = [Answer(200, delay=3.0)]  # answers after the 0.3 s timeout
    endpoint = await create_endpoint(api, tenant, receiver.url)
    await emit(mongo, tenant)
    run_worker(dataclasses.replace(FAST, timeout_seconds=0.3))
    got = await receiver.wait_for(2)
    assert got[1].at - got[0].at < 2.0  # the second did not wait for the first's answer
    await asyncio.sleep(0.2)
    log = await attempts_of(api, tenant, endpoint["id"])
    assert log[-1]["statusCode"] is None and log[-1]["error"] == "No answer within 0.3 s"
    assert 250 <= log[-1]["durationMs"] < 1500
    assert log[0]["outcome"] == "delivered"


async def test_during_a_rotation_both_secrets_sign(api, mongo, tenant, receiver, run_worker):
    endpoint = await create_endpoint(api, tenant, receiver.url)
    old = endpoint["secret"]
    resp = await api.post(
        f"/api/v1/webhooks/{endpoint['id']}/rotate-secret", headers=tenant.headers
    )
    rotated = await data_of(resp)
    new = rotated["secret"]
    assert new != old and rotated["previousSecretExpiresAt"]
    await emit(mongo, tenant)
    run_worker()
    [got] = await receiver.wait_for(1)
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        Webhook(secret).verify(got.body, got.headers)
        assert pollybot_valid(secret, got.headers, got.body)
    assert re.fullmatch(
        r"sha256=[0-9a-f]{64}, sha256=[0-9a-f]{64}", got.headers["X-Webhook-Signature"]
    )


async def test_replay_sends_the_events_again_with_their_ids(
    api, mongo, tenant, receiver, run_worker
):
    endpoint = await create_endpoint(api, tenant, receiver.url)
    events = await emit(mongo, tenant, n=2)
    events += await emit(mongo, tenant, LEAD_UPDATED, n=1)
    run_worker()
    await receiver.wait_for(3)
    resp = await api.post(
        f"/api/v1/webhooks/{endpoint['id']}/replay", json={"after": 1}, headers=tenant.headers
    )
    replay = await data_of(resp, 202)
    assert replay["chatbotIds"] == [tenant.chatbot_id] and replay["after"] == 1
    got = await receiver.wait_for(5)
    await asyncio.sleep(0.3)
    assert len(got) == 5
    again = sorted(json.loads(r.body)["sequence"] for r in got[3:])
    assert again == [2, 3]
    assert {r.headers["webhook-id"] for r in got[3:]} == {e["_id"] for e in events[1:]}


async def test_several_workers_never_send_one_delivery_twice_at_once(
    api, mongo, tenant, receiver, run_worker
):
    receiver.default = Answer(200, delay=0.05)
    await create_endpoint(api, tenant, receiver.url)
    await create_endpoint(api, tenant, receiver.url.replace("/hook", "/elsewhere"))
    events = await emit(mongo, tenant, n=30)
    for _ in range(3):
        run_worker()
    got = await receiver.wait_for(60, timeout=20)
    await asyncio.sleep(0.3)
    assert len(got) == 60  # every event to both endpoints, once each
    assert receiver.overlaps == 0
    ids = sorted(r.headers["webhook-id"] for r in got)
    assert ids == sorted([e["_id"] for e in events] * 2)


async def test_the_example_receiver_accepts_a_real_delivery(api, mongo, tenant, run_worker):
    """scripts/example_webhook_receiver.py, as docs/webhooks.md runs it, verifies deliveries."""
    import importlib.util
    from pathlib import Path

    from aiohttp.test_utils import TestServer

    path = Path(__file__).resolve().parents[2] / "scripts" / "example_webhook_receiver.py"
    spec = importlib.util.spec_from_file_location("example_receiver", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    receiver = Receiver()  # for its port; the example's app serves it
    resp = await api.post(
        "/api/v1/webhooks",
        json={"url": f"http://127.0.0.1:{receiver.port}/webhooks/pollybot"},
        headers=tenant.headers,
    )
    endpoint = await data_of(resp, 201)
    server = TestServer(example.make_app(endpoint["secret"]), port=receiver.port)
    await server.start_server()
    try:
        await emit(mongo, tenant)
        run_worker()

        async def answered() -> bool:
            return bool(await attempts_of(api, tenant, endpoint["id"]))

        await _eventually(answered)
        [attempt] = await attempts_of(api, tenant, endpoint["id"])
        assert attempt["statusCode"] == 204  # 401 when the signature does not verify
        assert not example.standard_signature_ok("whsec_" + "A" * 44, {}, b"{}")
    finally:
        await server.close()


async def test_lead_writes_through_the_api_are_delivered_in_order(
    api, tenant, receiver, run_worker
):
    """End to end: each committed create, update and delete reaches the receiver once
    (the first two sent before the delete: sent after it, they would be redacted)."""
    endpoint = await create_endpoint(api, tenant, receiver.url)
    run_worker()
    resp = await api.post(
        tenant.leads_url, json={"name": "Ada", "email": "ada@example.com"}, headers=tenant.headers
    )
    lead = await data_of(resp, 201)
    resp = await api.put(
        tenant.lead_url(lead["id"]), json={"status": "contacted"}, headers=tenant.headers
    )
    updated = await data_of(resp)
    await receiver.wait_for(2)
    resp = await api.delete(
        tenant.lead_url(lead["id"]), params={"confirm": "true"}, headers=tenant.headers
    )
    await data_of(resp)
    got = await receiver.wait_for(3)
    await asyncio.sleep(0.2)
    events = sorted(
        (Webhook(endpoint["secret"]).verify(r.body, r.headers) for r in got),
        key=lambda e: e["sequence"],
    )
    assert [e["type"] for e in events] == ["lead.created", "lead.updated", "lead.deleted"]
    assert [e["sequence"] for e in events] == [1, 2, 3]
    assert events[0]["data"]["lead"]["email"] == "ada@example.com"
    assert events[1]["data"]["lead"] == updated
    assert events[1]["data"]["changes"]["status"] == {"from": "new", "to": "contacted"}
    assert events[2]["data"] == {"lead": {"id": lead["id"]}}


async def test_a_write_wakes_its_own_servers_dispatcher(settings, receiver):
    """`serve` delivering in the background with a one-minute poll: its own creates are
    still delivered at once (the commit wakes the dispatcher; the poll only finds other
    processes' writes)."""
    own = settings.replace(
        mongodb_database=f"{settings.mongodb_database}_wake",
        webhooks_deliver=True,
        webhook_poll_seconds=60.0,
    )
    async with database_of(own) as mongo, serving(own) as api:
        tenant = await make_tenant(AccountRepository(mongo))
        endpoint = await create_endpoint(api, tenant, receiver.url)
        await asyncio.sleep(0.5)  # the dispatcher has looked once and waits for a minute
        for n in (1, 2):
            resp = await api.post(
                tenant.leads_url,
                json={"name": "Ada", "email": "a@example.com"},
                headers=tenant.headers,
            )
            lead = await data_of(resp, 201)
            got = await receiver.wait_for(n, timeout=10)
            event = Webhook(endpoint["secret"]).verify(got[-1].body, got[-1].headers)
            assert event["data"]["lead"]["id"] == lead["id"]


async def test_under_a_burst_of_requests_deliveries_wait_and_then_all_arrive(settings, receiver):
    """`serve` gives way to its own requests: while they are in flight its deliveries
    keep to a share of the store's time (here 5 %), so they are held back (the operator
    sees it in /metrics), and once the burst is over every event arrives, once each."""
    own = settings.replace(
        mongodb_database=f"{settings.mongodb_database}_paced",
        webhooks_deliver=True,
        webhook_store_share_under_load=0.05,
    )

    async def held_seconds(api) -> float:
        text = await (await api.get("/metrics")).text()
        [line] = [ln for ln in text.splitlines() if ln.startswith(HELD_METRIC + " ")]
        return float(line.split()[1])

    async with database_of(own) as mongo, serving(own) as api:
        tenant = await make_tenant(AccountRepository(mongo))
        endpoint = await create_endpoint(api, tenant, receiver.url)
        held_before = await held_seconds(api)
        created: list[str] = []

        async def client() -> None:
            for _ in range(10):
                resp = await api.post(
                    tenant.leads_url,
                    json={"name": "Ada", "email": "a@example.com"},
                    headers=tenant.headers,
                )
                created.append((await data_of(resp, 201))["id"])
                await data_of(await api.get(tenant.lead_url(created[-1]), headers=tenant.headers))

        await asyncio.gather(*(client() for _ in range(8)))
        got = await receiver.wait_for(len(created), timeout=30)
        await asyncio.sleep(0.3)  # a duplicate would show now
        assert await held_seconds(api) > held_before  # they did wait
        verify = Webhook(endpoint["secret"]).verify
        delivered = [verify(r.body, r.headers)["data"]["lead"]["id"] for r in receiver.received]
        assert len(got) == len(created) == 80
        assert sorted(delivered) == sorted(created)


HELD_METRIC = "pollybot_webhook_store_held_seconds_total"


PERSON = {
    "name": "Secret Person",
    "email": "secret.person@private.example",
    "phone": "+44 20 7946 0123",
    "metadata": {"note": "meta-secret-value"},
}


def sent_events(receiver: Receiver, secret: str) -> list[dict]:
    events = [Webhook(secret).verify(r.body, r.headers) for r in receiver.received]
    return sorted(events, key=lambda e: e["sequence"])


def personal_data_in(receiver: Receiver) -> list[str]:
    bodies = b"".join(r.body for r in receiver.received).decode()
    return [v for v in (*PERSON.values(), PERSON["metadata"]["note"]) if str(v) in bodies]


async def write_and_delete(api, tenant) -> str:
    """A lead created, changed and deleted: three events, the first two redacted."""
    lead = await data_of(await api.post(tenant.leads_url, json=PERSON, headers=tenant.headers), 201)
    resp = await api.put(
        tenant.lead_url(lead["id"]), json={"status": "contacted"}, headers=tenant.headers
    )
    await data_of(resp)
    resp = await api.delete(
        tenant.lead_url(lead["id"]), params={"confirm": "true"}, headers=tenant.headers
    )
    await data_of(resp)
    return str(lead["id"])


async def test_an_endpoint_made_after_a_deletion_is_replayed_only_the_redacted_form(
    api, mongo, accounts, receiver, run_worker
):
    tenant = await make_tenant(accounts)
    lead_id = await write_and_delete(api, tenant)
    run_worker()  # fans the events out (to no endpoint) before the endpoint exists

    async def fanned_out() -> bool:
        pending = {"chatbotId": tenant.chatbot_id, "pending": {"$exists": True}}
        return await mongo.db["events"].count_documents(pending) == 0

    await _eventually(fanned_out)
    endpoint = await create_endpoint(api, tenant, receiver.url)
    resp = await api.post(
        f"/api/v1/webhooks/{endpoint['id']}/replay", json={"after": 0}, headers=tenant.headers
    )
    await data_of(resp, 202)
    await receiver.wait_for(3)
    await asyncio.sleep(0.2)
    events = sent_events(receiver, endpoint["secret"])
    assert [(e["type"], e["sequence"]) for e in events] == [
        ("lead.created", 1),
        ("lead.updated", 2),
        ("lead.deleted", 3),
    ]
    redacted = {"lead": {"id": lead_id}, "redacted": True}
    assert [e["data"] for e in events] == [redacted, redacted, {"lead": {"id": lead_id}}]
    assert personal_data_in(receiver) == []


async def test_deliveries_queued_before_a_deletion_send_the_redacted_form(
    api, accounts, receiver, run_worker
):
    """Queued while the receiver was failing, retried after the deletion: redacted.

    The receiver asks for the retry 2 s later (Retry-After on a 503 is honoured), so no
    attempt is under way when the deletion commits: one whose event was read just before
    it may still send the old form once (docs/privacy.md)."""
    tenant = await make_tenant(accounts)
    receiver.answers = [Answer(503, headers={"Retry-After": "2"})]
    endpoint = await create_endpoint(api, tenant, receiver.url)
    run_worker()
    lead = await data_of(await api.post(tenant.leads_url, json=PERSON, headers=tenant.headers), 201)
    await receiver.wait_for(1)  # the first attempt, refused
    resp = await api.delete(
        tenant.lead_url(lead["id"]), params={"confirm": "true"}, headers=tenant.headers
    )
    await data_of(resp)
    first_body = receiver.received[0].body
    assert PERSON["email"].encode() in first_body  # sent (and refused) before the deletion

    async def both_delivered() -> bool:
        attempts = await attempts_of(api, tenant, endpoint["id"])
        return sum(a["outcome"] == "delivered" for a in attempts) == 2

    await _eventually(both_delivered)
    retried = [Webhook(endpoint["secret"]).verify(r.body, r.headers) for r in receiver.received[1:]]
    assert {e["type"] for e in retried} == {"lead.created", "lead.deleted"}
    for event in retried:
        gone = {"lead": {"id": lead["id"]}}
        assert event["data"] == (
            {**gone, "redacted": True} if event["type"] != "lead.deleted" else gone
        )
    assert all(PERSON["email"].encode() not in r.body for r in receiver.received[1:])
    # The delivery log keeps no body: only ids, times, status codes and errors.
    attempts = await attempts_of(api, tenant, endpoint["id"])
    assert PERSON["email"] not in json.dumps(attempts)
