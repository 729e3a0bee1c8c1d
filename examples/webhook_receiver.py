"""A webhook endpoint in a few lines: it verifies one delivery from orgplane with the Standard
Webhooks library, prints what it got, answers 204 and exits (after 60 s without one, it exits 1).

    WHSEC=whsec_... .venv/bin/python examples/webhook_receiver.py 8765

Needs ``standardwebhooks`` (`make run` installs it with orgplane's ``examples`` extra).
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

verifier = Webhook(os.environ["WHSEC"])
received = []


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        try:
            event = verifier.verify(body, dict(self.headers))
        except WebhookVerificationError as exc:
            print(f"refused: {exc}", flush=True)
            self.send_response(400)
            self.end_headers()
            return
        data = event["data"]
        print(f"verified {event['type']} {self.headers['webhook-id']} on {data['org_id']}")
        print(json.dumps({"before": data["before"], "after": data["after"]}), flush=True)
        self.send_response(204)
        self.end_headers()
        received.append(event)

    def log_message(self, *args: object) -> None:
        pass  # the lines above say what arrived


class OneDelivery(HTTPServer):
    timeout = 60

    def handle_timeout(self) -> None:
        sys.exit("no delivery within 60 s")


server = OneDelivery(("127.0.0.1", int(sys.argv[1])), Receiver)
while not received:
    server.handle_request()
