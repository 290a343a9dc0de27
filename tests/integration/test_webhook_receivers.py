"""The receiver examples of docs/webhooks.md, fed by the real worker and by forged requests."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from jobs.webhooks import SIGNATURE_HEADER, WebhookWorker, sign
from tests.integration.test_webhooks import SECRET, eventually, publish, webhook_settings
from tests.servers import free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
RECEIVERS = {
    "python": [sys.executable, str(EXAMPLES / "webhook_receiver.py")],
    "javascript": ["node", str(EXAMPLES / "webhook-receiver.js")],
}


class ReceiverProcess:
    def __init__(self, command: list[str], log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = log
        env = {
            "PATH": "/usr/bin:/bin",
            "STREAMSTATS_WEBHOOK_SECRET": SECRET,
            "PORT": str(self.port),
        }
        with log.open("wb") as out:
            self.proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise AssertionError(f"receiver did not listen: {log.read_text()}")

    def handled(self) -> list[list[str]]:
        return [line.split() for line in self.log.read_text().splitlines() if line.strip()]


@pytest.fixture(params=sorted(RECEIVERS))
def example(request, tmp_path) -> Iterator[ReceiverProcess]:
    process = ReceiverProcess(RECEIVERS[request.param], tmp_path / f"{request.param}.log")
    yield process
    process.proc.terminate()
    process.proc.wait(10)


async def post(url: str, body: bytes, signature: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers={SIGNATURE_HEADER: signature}) as response,
    ):
        return response.status


async def test_the_receiver_example_verifies_signatures_and_drops_duplicates(
    example, conn, make_settings
):
    worker = WebhookWorker(webhook_settings(make_settings, example.url))
    await worker.start()
    stream = str(uuid.uuid4())
    try:
        await publish(conn, stream, 3)
        await eventually(
            lambda: conn.fetchval(
                "SELECT count(*) = 3 FROM webhook_deliveries WHERE status = 'delivered'"
            )
        )
    finally:
        await worker.stop()
    rows = await conn.fetch("SELECT event_id, type FROM alert_events ORDER BY id")
    expected = [[r["type"], str(r["event_id"]), "fps_low", stream] for r in rows]
    assert example.handled() == expected

    event = {
        "id": str(rows[0]["event_id"]),
        "type": "alert.raised",
        "createdAt": "x",
        "data": {"type": "fps_low", "streamId": stream},
    }
    body = json.dumps(event).encode()
    now = int(time.time())
    secret = SECRET.encode()
    # A redelivery of an event already handled: accepted, not handled again.
    assert await post(example.url, body, sign(secret, now, body)) == 204
    # Forged, tampered, replayed from 10 minutes ago, unsigned: refused.
    assert await post(example.url, body, sign(b"x" * 32, now, body)) == 401
    assert await post(example.url, body + b" ", sign(secret, now, body)) == 401
    assert await post(example.url, body, sign(secret, now - 600, body)) == 401
    assert await post(example.url, body, "") == 401
    fresh = json.dumps({**event, "id": str(uuid.uuid4())}).encode()
    assert await post(example.url, fresh, sign(secret, now, fresh)) == 204
    await asyncio.sleep(0.2)
    handled = example.handled()
    assert handled[:3] == expected and len(handled) == 4
    assert handled[3][1] == json.loads(fresh)["id"]
