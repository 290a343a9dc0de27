"""`streamstats run` with webhooks: a threshold alert at ingest reaches a receiver, signed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import socketio

from ingest.auth import mint_token
from tests.e2e.test_alerts import Recorder, iso
from tests.integration.test_webhooks import SECRET, eventually, receiver  # noqa: F401
from tests.servers import JWT_SECRET


# `receiver` is the fixture of tests/integration/test_webhooks.py, imported above.
async def test_a_threshold_alert_at_ingest_is_delivered_by_run(start_server, receiver):  # noqa: F811
    server = start_server(
        command="run",
        env={
            "STREAMSTATS_WEBHOOK_URLS": receiver.url,
            "STREAMSTATS_WEBHOOK_SECRET": SECRET,
            "STREAMSTATS_WEBHOOK_BACKOFF": "100ms",
        },
    )
    await eventually(lambda: "delivering webhooks to" in server.log(), timeout=30)
    stream = str(uuid.uuid4())
    sio = socketio.AsyncClient(reconnection=False)
    streamer = Recorder(sio)
    token = mint_token(JWT_SECRET, role="streamer", streams=[stream])
    await sio.connect(server.url, auth={"token": token}, transports=["websocket"])
    try:
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
        for i, loss in enumerate([9, 9, 0, 0, 0]):
            answer = await sio.call(
                "stream:stats:update",
                {
                    "streamId": stream,
                    "stats": {"bitrate": 2500, "fps": 30, "packetLoss": loss, "latency": 40},
                    "timestamp": iso(start + timedelta(seconds=5 * i)),
                },
                timeout=10,
            )
            assert answer["ok"], answer
        await eventually(lambda: len(receiver.requests) >= 2, timeout=30)
    finally:
        await sio.disconnect()
    bodies = [r["body"] for r in receiver.requests]
    assert [b["type"] for b in bodies] == ["alert.raised", "alert.cleared"]
    assert all(r["signed"] for r in receiver.requests)
    assert {b["data"]["streamId"] for b in bodies} == {stream}
    assert bodies[0]["data"]["type"] == "packet_loss_high"
    # The streamer got the same alerts over Socket.IO, once each.
    assert [a["state"] for a in streamer.alerts] == ["raised", "cleared"]
    assert [b["data"] for b in bodies] == streamer.alerts
