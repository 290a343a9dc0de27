"""A stream-stats webhook receiver: verifies the signature, drops duplicates, handles each event.

Run: STREAMSTATS_WEBHOOK_SECRET=... PORT=9000 python webhook_receiver.py
Standard library only. Keep `seen` in your database (a unique key on the event id) in production.
"""

import hashlib
import hmac
import json
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ["STREAMSTATS_WEBHOOK_SECRET"].encode()
TOLERANCE_SECONDS = 300  # reject signatures older (or newer) than 5 minutes: replays
seen: set[str] = set()


def verify(header: str, body: bytes) -> bool:
    """Check `StreamStats-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > TOLERANCE_SECONDS:
        return False
    expected = hmac.new(SECRET, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields.get("v1", ""))


def handle(event: dict) -> None:
    """Your code: page someone, post to chat, open a ticket..."""
    alert = event["data"]
    print(event["type"], event["id"], alert["type"], alert["streamId"], flush=True)


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if not verify(self.headers.get("StreamStats-Signature", ""), body):
            self.send_response(401)
            self.end_headers()
            return
        event = json.loads(body)
        # Delivery is at least once: the same event may come again, always with the same id.
        if event["id"] not in seen:
            seen.add(event["id"])
            handle(event)
        self.send_response(204)  # any 2xx: delivered; anything else is retried
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(
        ("127.0.0.1", int(os.environ.get("PORT", "9000"))), Receiver
    ).serve_forever()
