"""A webhook receiver on the standard library: registers its own endpoint with the
client, verifies each delivery with ``verify_webhook`` (a 401 when it does not verify),
acts once per event id (deliveries are at least once) and prints it; removes its endpoint
when stopped. Reads POLLYBOT_API_KEY and POLLYBOT_BASE_URL; ``--port`` (9000)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from pollybot_leads_client import Client, WebhookVerificationError, verify_webhook


def handler(secret: str) -> type[BaseHTTPRequestHandler]:
    seen: set[str] = set()  # keep these in your database in production

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            try:
                event = verify_webhook(body, dict(self.headers.items()), secret)
            except WebhookVerificationError:
                self.send_response(401)
                self.end_headers()
                return
            self.send_response(204)  # answer at once; do slow work afterwards
            self.end_headers()
            if event["id"] not in seen:
                seen.add(event["id"])
                lead = event["data"]["lead"]
                print(event["type"], lead["id"], lead.get("email"), flush=True)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # no access log on stderr

    return Receiver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=9000)
    port = parser.parse_args().port
    base_url = os.environ.get("POLLYBOT_BASE_URL", "http://127.0.0.1:8080")
    with Client(api_key=os.environ["POLLYBOT_API_KEY"], base_url=base_url) as c:
        endpoint = c.webhooks.create(
            f"http://127.0.0.1:{port}/webhooks",
            events=["lead.created", "lead.updated"],
            description="example receiver",
        )
        assert endpoint.secret is not None  # shown when it is created, and on a rotation
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            server = HTTPServer(("127.0.0.1", port), handler(endpoint.secret))
            print("receiving for endpoint", endpoint.id, flush=True)
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            c.webhooks.delete(endpoint.id)


if __name__ == "__main__":
    main()
