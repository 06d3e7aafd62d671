"""A minimal webhook receiver for PollyBot Leads: verifies, de-duplicates, prints.

    WEBHOOK_SECRET=whsec_... .venv/bin/python scripts/example_webhook_receiver.py --port 9000

Checks the Standard Webhooks signature (``webhook-signature``: HMAC-SHA256 of
"{webhook-id}.{webhook-timestamp}.{body}", keyed with the base64-decoded bytes after
``whsec_``) and refuses timestamps more than 5 minutes away (a captured delivery cannot
be replayed later). Receivers written for PollyBot's own header can check
``X-Webhook-Signature`` instead (``pollybot_signature_ok``). Deliveries are at least
once: the same ``webhook-id`` may arrive again, and is acknowledged without acting twice.
Answer 2xx quickly (within 15 s) and do slow work afterwards.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import time

from aiohttp import web

TOLERANCE_SECONDS = 300


def standard_signature_ok(secret: str, headers, body: bytes) -> bool:
    msg_id, timestamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
    if not msg_id or not timestamp.isdigit():
        return False
    if abs(time.time() - int(timestamp)) > TOLERANCE_SECONDS:
        return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    # Several "v1,<sig>" separated by spaces while the sender rotates its secret.
    return any(
        hmac.compare_digest(part.removeprefix("v1,"), expected)
        for part in headers.get("webhook-signature", "").split()
        if part.startswith("v1,")
    )


def pollybot_signature_ok(secret: str, headers, body: bytes) -> bool:
    """PollyBot's scheme: sha256=<hex HMAC-SHA256(secret string, body + timestamp)>."""
    timestamp = headers.get("X-Webhook-Timestamp", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > TOLERANCE_SECONDS:
        return False
    expected = hmac.new(secret.encode(), body + timestamp.encode(), hashlib.sha256).hexdigest()
    return any(
        hmac.compare_digest(part.strip(), "sha256=" + expected)
        for part in headers.get("X-Webhook-Signature", "").split(",")
    )


def make_app(secret: str) -> web.Application:
    seen: set[str] = set()  # use a durable store in production

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        if not standard_signature_ok(secret, request.headers, body):
            return web.Response(status=401, text="bad signature")
        msg_id = request.headers["webhook-id"]
        if msg_id not in seen:
            seen.add(msg_id)
            event = json.loads(body)
            lead = event["data"]["lead"]
            print(f"{event['sequence']:>6} {event['event']:<13} {lead['id']}", flush=True)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/webhooks/pollybot", receive)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    secret = os.environ.get("WEBHOOK_SECRET", "")
    if not secret.startswith("whsec_"):
        parser.error("set WEBHOOK_SECRET to the endpoint's secret (whsec_...)")
    web.run_app(make_app(secret), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
