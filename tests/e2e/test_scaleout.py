"""Two real ingest processes sharing a real Redis: one service, whichever node a client is on."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
import socketio

from ingest.auth import mint_token
from streamstats import outbox
from tests.servers import JWT_SECRET, ServerProcess

pytestmark = [pytest.mark.redis, pytest.mark.slow]

# A database number of these tests' own, flushed before each: nodes and channels of other
# tests or runs must not be seen here.
REDIS_URL = "redis://127.0.0.1:6379/7"
PRESENCE_TTL = 2.0


@pytest.fixture
def redis_db() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    client.close()
    yield REDIS_URL


@pytest.fixture
def two_nodes(start_server, redis_db) -> tuple[ServerProcess, ServerProcess]:
    env = {"REDIS_URL": redis_db, "STREAMSTATS_PRESENCE_TTL": f"{PRESENCE_TTL}s"}
    return start_server(env=env), start_server(env=env)


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Any]]:
    """Connect real Socket.IO clients; every one is disconnected afterwards."""
    clients: list[socketio.AsyncClient] = []

    async def connect(server: ServerProcess, role: str, streams: list[str] | None = None):
        client = socketio.AsyncClient(reconnection=False)
        clients.append(client)
        token = mint_token(JWT_SECRET, role=role, streams=streams, sub=f"{role}-{len(clients)}")
        await client.connect(
            server.url, auth={"token": token}, transports=["websocket"], wait_timeout=10
        )
        return client

    yield connect
    for client in clients:
        if client.connected:
            await client.disconnect()
    await asyncio.sleep(0)


async def viewer_count(client: socketio.AsyncClient, stream_id: str) -> int:
    answer = await client.call("stream:stats:get", {"streamId": stream_id}, timeout=10)
    return int(answer["viewerCount"])


async def wait_for_count(
    client: socketio.AsyncClient, stream_id: str, expected: int, timeout: float
) -> float:
    """Seconds until `viewerCount` equals `expected`; fails with the last count after `timeout`."""
    started = time.monotonic()
    count = -1
    while time.monotonic() - started < timeout:
        count = await viewer_count(client, stream_id)
        if count == expected:
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    raise AssertionError(f"viewerCount stayed {count}, expected {expected} within {timeout}s")


def update(stream_id: str) -> dict[str, Any]:
    return {
        "streamId": stream_id,
        "stats": {"bitrate": 2500, "fps": 30, "packetLoss": 0.5, "latency": 45},
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }


async def test_viewers_on_both_nodes_are_counted_from_either(two_nodes, connect):
    a, b = two_nodes
    stream = str(uuid.uuid4())
    for node in (a, a, b):
        viewer = await connect(node, "viewer", [stream])
        await viewer.emit("stream:join", {"streamId": stream})
    # The same connection joining twice still counts once.
    await viewer.emit("stream:join", {"streamId": stream})
    on_a = await connect(a, "moderator")
    on_b = await connect(b, "moderator")
    await wait_for_count(on_a, stream, 3, timeout=10)
    assert await viewer_count(on_b, stream) == 3
    assert await viewer_count(on_b, str(uuid.uuid4())) == 0

    await viewer.emit("stream:leave", {"streamId": stream})
    await wait_for_count(on_a, stream, 2, timeout=10)
    await viewer.disconnect()
    assert await viewer_count(on_b, stream) == 2


async def test_an_update_sent_to_one_node_reaches_a_monitor_on_the_other_exactly_once(
    two_nodes, connect
):
    a, b = two_nodes
    stream = str(uuid.uuid4())
    received: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
    for name, node in (("a", a), ("b", b)):
        monitor = await connect(node, "moderator")
        monitor.on("stream:stats:update", received[name].append)
    streamer = await connect(a, "streamer", [stream])

    ack = await streamer.call("stream:stats:update", update(stream), timeout=10)
    assert ack["ok"] is True, ack
    # Give a late duplicate every chance to arrive before counting.
    await asyncio.sleep(1.5)
    for name in ("a", "b"):
        ours = [event for event in received[name] if event["streamId"] == stream]
        assert len(ours) == 1, f"monitor on node {name} got {len(ours)} broadcasts"
        assert ours[0]["stats"]["bitrate"] == 2500


async def test_a_killed_nodes_viewers_stop_counting_within_30_seconds(two_nodes, connect):
    a, b = two_nodes
    stream = str(uuid.uuid4())
    for node in (a, a, b):
        viewer = await connect(node, "viewer", [stream])
        await viewer.emit("stream:join", {"streamId": stream})
    on_b = await connect(b, "moderator")
    await wait_for_count(on_b, stream, 3, timeout=10)

    a.kill()  # SIGKILL: no goodbye, nothing cleaned up in Redis
    waited = await wait_for_count(on_b, stream, 1, timeout=30)
    # The node's last heartbeat was at most a third of the TTL before the kill.
    assert waited <= PRESENCE_TTL + 3


def wait_for_log(server: ServerProcess, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.log():
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not logged:\n{server.log()}")
        time.sleep(0.1)


async def test_alerts_reach_every_client_exactly_once_from_a_node_or_from_a_job(
    two_nodes, connect, conn
):
    a, b = two_nodes
    stream = str(uuid.uuid4())
    alerts: dict[str, list[dict[str, Any]]] = {}
    for name, node, role in (
        ("monitor on a", a, "moderator"),
        ("monitor on b", b, "moderator"),
        ("streamer on b", b, "streamer"),
    ):
        client = await connect(node, role, [stream] if role == "streamer" else None)
        alerts[name] = []
        client.on("stream:alert", alerts[name].append)
    streamer = await connect(a, "streamer", [stream])
    for node in (a, b):
        wait_for_log(node, "relaying job alerts")

    # A threshold alert raised by node a when it commits the second lossy sample.
    for _ in range(2):
        lossy = update(stream)
        lossy["stats"]["packetLoss"] = 12.0
        ack = await streamer.call("stream:stats:update", lossy, timeout=10)
        assert ack["ok"] is True, ack
        await asyncio.sleep(0.01)
    # A bitrate-drop alert from the jobs process: written to the outbox, relayed by every node to
    # its own clients.
    drop = {
        "streamId": stream,
        "type": "bitrate_drop",
        "state": "raised",
        "value": 900.0,
        "threshold": 3000.0,
        "startedAt": "2026-01-21T10:30:00.000Z",
    }
    async with conn.transaction():
        await outbox.publish(conn, drop)
    await asyncio.sleep(2.0)

    for name, received in alerts.items():
        kinds = sorted(f"{alert['type']}:{alert['state']}" for alert in received)
        assert kinds == ["bitrate_drop:raised", "packet_loss_high:raised"], name


async def test_a_monitor_unsubscribed_on_one_node_gets_no_broadcast_from_the_other(
    two_nodes, connect
):
    a, b = two_nodes
    quiet, other = str(uuid.uuid4()), str(uuid.uuid4())
    received: list[dict[str, Any]] = []
    monitor = await connect(b, "moderator")
    monitor.on("stream:stats:update", received.append)
    answer = await monitor.call("stream:stats:unsubscribe", {"streamId": quiet}, timeout=10)
    assert answer["ok"] is True, answer
    streamer = await connect(a, "streamer", [quiet, other])
    for stream in (quiet, other):
        ack = await streamer.call("stream:stats:update", update(stream), timeout=10)
        assert ack["ok"] is True, ack
    await asyncio.sleep(1.5)
    assert [event["streamId"] for event in received] == [other]
