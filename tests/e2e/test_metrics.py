"""`/metrics` of a real ingest process reflects what its clients did."""

from __future__ import annotations

import urllib.request
import uuid
from datetime import UTC, datetime

import socketio

from ingest.auth import mint_token
from tests.servers import JWT_SECRET


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
        assert response.headers["content-type"].startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


async def test_metrics_count_updates_connections_and_viewers(start_server):
    server = start_server()
    stream = str(uuid.uuid4())
    clients = []
    try:
        for role, streams in (("streamer", [stream]), ("viewer", [stream]), ("moderator", None)):
            client = socketio.AsyncClient(reconnection=False, handle_sigint=False)
            clients.append(client)
            token = mint_token(JWT_SECRET, role=role, streams=streams)
            await client.connect(server.url, auth={"token": token}, transports=["websocket"])
        streamer, viewer, _ = clients
        await viewer.call("stream:join", {"streamId": stream}, timeout=10)
        now = datetime.now(UTC).isoformat()
        update = {"streamId": stream, "stats": {"bitrate": 2500}, "timestamp": now}
        for expected in (False, True):
            ack = await streamer.call("stream:stats:update", update, timeout=10)
            assert ack["duplicate"] is expected, ack
        bad = await streamer.call("stream:stats:update", {"streamId": stream}, timeout=10)
        assert bad["error"]["code"] == "invalid"

        m = scrape(server.url)
        assert m['streamstats_events_total{code="",outcome="stored"}'] == 1
        assert m['streamstats_events_total{code="",outcome="duplicate"}'] == 1
        assert m['streamstats_events_total{code="invalid",outcome="rejected"}'] == 1
        assert m["streamstats_ack_seconds_count"] == 2
        assert m["streamstats_batch_rows_sum"] >= 1
        assert m["streamstats_flush_seconds_count"] >= 1
        assert m['streamstats_connections{role="streamer"}'] == 1
        assert m['streamstats_connections{role="viewer"}'] == 1
        assert m['streamstats_connections{role="moderator"}'] == 1
        assert m["streamstats_viewers"] == 1
        assert m["streamstats_queue_rows"] == 0
        assert m["streamstats_queue_capacity_rows"] == 100_000
        assert m["streamstats_ready"] == 1
        assert m['streamstats_webhook_deliveries{status="pending"}'] == 0
        assert m["streamstats_webhook_oldest_pending_seconds"] == 0
        assert m["process_open_fds"] > 0
    finally:
        for client in clients:
            await client.disconnect()
            await client.shutdown()
