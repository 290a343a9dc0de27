"""Quality advice end to end: real servers, TimescaleDB, Redis and Socket.IO clients."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from tests.e2e.clients import Client, Clients, guide_update

pytestmark = pytest.mark.slow

ADVICE = "stream:quality:advice"
# Quick advice for tests: a 3 s window, raises after 4 s fine, the same action 5 s apart at least.
FAST = {
    "STREAMSTATS_ADVICE_WINDOW": "3s",
    "STREAMSTATS_ADVICE_RAISE_HOLD": "4s",
    "STREAMSTATS_ADVICE_MIN_INTERVAL": "5s",
}
REDIS_URL = "redis://127.0.0.1:6379/7"
GOOD = {"packetLoss": 0.2, "latency": 40, "bandwidth": {"upload": 20000, "download": 20000}}
CONGESTED = {"packetLoss": 12, "latency": 40, "bandwidth": {"upload": 20000, "download": 20000}}


class Clock:
    """Sample timestamps one second apart, starting a minute ago (the server judges by them)."""

    def __init__(self) -> None:
        self.at = datetime.now(UTC) - timedelta(minutes=1)

    def next(self) -> str:
        self.at += timedelta(seconds=1)
        return self.at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def send(streamer: Client, stream: str, clock: Clock, n: int, **stats: Any) -> None:
    for _ in range(n):
        update = guide_update(stream, clock.next(), **stats)
        answer = await streamer.call("stream:stats:update", update)
        assert answer["ok"], answer


async def settle(seconds: float = 1.0) -> None:
    """Advice follows the commit on its own lane: give it a moment to arrive."""
    await asyncio.sleep(seconds)


async def test_congested_streamer_gets_one_lower_then_one_raise(start_server, conn) -> None:
    server = start_server(env=FAST)
    stream = str(uuid.uuid4())
    clock = Clock()
    async with Clients(server) as clients:
        streamer = await clients.connect("streamer", [stream])
        monitor = await clients.connect("moderator")
        viewer = await clients.connect("viewer", [stream])
        for client in (streamer, monitor, viewer):
            client.sio.on(ADVICE, client._recorder(ADVICE))
        await send(streamer, stream, clock, 5, bitrate=4000, **GOOD)
        await send(streamer, stream, clock, 3, bitrate=4000, **CONGESTED)
        [lower] = await streamer.wait_for(ADVICE)
        assert lower["action"] == "lower" and lower["streamId"] == stream
        assert lower["reasons"] == ["packet_loss"]
        assert lower["target"]["bitrate"] == 2000
        # The streamer applies it; the link is fine again. Once the hold has passed: one raise.
        await send(streamer, stream, clock, 8, bitrate=2000, **GOOD)
        await settle()
        advice = streamer.received[ADVICE]
        assert [a["action"] for a in advice] == ["lower", "raise"]
        raise_ = advice[1]
        assert raise_["reasons"] == ["recovered"]
        assert 2000 < raise_["target"]["bitrate"] <= 4000
        assert monitor.received[ADVICE] == advice
        assert viewer.received[ADVICE] == []

        # What the streamer applied is recorded with the advice.
        applied = {"maxBitrate": 2_000_000, "scaleResolutionDownBy": 1.5, "maxFramerate": 30}
        body = {"streamId": stream, "adviceId": lower["adviceId"], "applied": applied}
        answer = await streamer.call("stream:quality:applied", body)
        assert answer == {"ok": True, "streamId": stream, "adviceId": lower["adviceId"]}
        # Refused: another stream's advice, a bad report, a viewer.
        other = {**body, "streamId": str(uuid.uuid4())}
        assert (await streamer.call("stream:quality:applied", other))["error"]["code"] == (
            "forbidden"
        )
        wrong = await streamer.call("stream:quality:applied", {**body, "adviceId": 999_999})
        assert wrong["error"] == {**wrong["error"], "code": "invalid", "field": "adviceId"}
        bad = {**body, "applied": {"maxBitrate": -1}}
        assert (await streamer.call("stream:quality:applied", bad))["error"]["field"] == (
            "maxBitrate"
        )
        refused = await viewer.call("stream:quality:applied", body)
        assert refused["error"]["code"] == "forbidden"

    rows = await conn.fetch(
        "SELECT id, action, reasons, applied_at, applied FROM stream_advice "
        "WHERE stream_id = $1 ORDER BY id",
        uuid.UUID(stream),
    )
    assert [(r["id"], r["action"]) for r in rows] == [
        (lower["adviceId"], "lower"),
        (raise_["adviceId"], "raise"),
    ]
    assert json.loads(rows[0]["applied"]) == applied and rows[0]["applied_at"] is not None
    assert rows[1]["applied"] is None


async def test_restarted_server_does_not_repeat_the_advice(start_server, conn) -> None:
    env = {**FAST, "STREAMSTATS_ADVICE_MIN_INTERVAL": "60s"}
    server = start_server(env=env)
    stream = str(uuid.uuid4())
    clock = Clock()
    async with Clients(server) as clients:
        streamer = await clients.connect("streamer", [stream])
        streamer.sio.on(ADVICE, streamer._recorder(ADVICE))
        await send(streamer, stream, clock, 3, bitrate=4000, **CONGESTED)
        [lower] = await streamer.wait_for(ADVICE)
    server.stop()
    server = start_server(env=env)
    async with Clients(server) as clients:
        streamer = await clients.connect("streamer", [stream])
        streamer.sio.on(ADVICE, streamer._recorder(ADVICE))
        # Still congested, not applied yet: a fresh advisor would say `lower` to 2000 again.
        await send(streamer, stream, clock, 6, bitrate=4000, **CONGESTED)
        await settle()
        assert streamer.received[ADVICE] == []
    count = await conn.fetchval(
        "SELECT count(*) FROM stream_advice WHERE stream_id = $1", uuid.UUID(stream)
    )
    assert count == 1 and lower["target"]["bitrate"] == 2000


@pytest.mark.redis
async def test_two_nodes_deliver_each_advice_once_to_each_client(start_server) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    client.close()
    env = {**FAST, "REDIS_URL": REDIS_URL}
    node_a, node_b = start_server(env=env), start_server(env=env)
    stream = str(uuid.uuid4())
    clock = Clock()
    async with Clients(node_a) as on_a, Clients(node_b) as on_b:
        streamer = await on_a.connect("streamer", [stream])
        second_streamer = await on_b.connect("streamer", [stream])
        monitors = [await on_a.connect("moderator"), await on_b.connect("admin")]
        everyone = [streamer, second_streamer, *monitors]
        for c in everyone:
            c.sio.on(ADVICE, c._recorder(ADVICE))
        await send(streamer, stream, clock, 3, bitrate=4000, **CONGESTED)
        await send(streamer, stream, clock, 8, bitrate=2000, **GOOD)
        await settle(1.5)
        mine = [[a for a in c.received[ADVICE] if a["streamId"] == stream] for c in everyone]
        assert [a["action"] for a in mine[0]] == ["lower", "raise"]
        assert all(seen == mine[0] for seen in mine)
