"""Alerts through real servers: threshold alerts at ingest, job alerts relayed once per client."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import redis
import socketio

from analytics.alerts import ALERT_CHANNEL, alert_payload
from ingest.auth import mint_token
from jobs import drops, rebuffering
from jobs.base import JobContext
from streamstats import outbox
from streamstats.db import create_pool
from tests.servers import JWT_SECRET, ServerProcess

REDIS_URL = "redis://127.0.0.1:6379/8"


class Recorder:
    """A connected client and the `stream:alert` events it received."""

    def __init__(self, sio: socketio.AsyncClient):
        self.sio = sio
        self.alerts: list[dict[str, Any]] = []
        sio.on("stream:alert", self.alerts.append)

    def states(self, type: str | None = None) -> list[str]:
        return [a["state"] for a in self.alerts if type is None or a["type"] == type]


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Any]]:
    clients: list[socketio.AsyncClient] = []

    async def connect(server: ServerProcess, role: str, streams: list[str] | None = None):
        sio = socketio.AsyncClient(reconnection=False)
        clients.append(sio)
        recorder = Recorder(sio)
        token = mint_token(JWT_SECRET, role=role, streams=streams, sub=f"{role}-{len(clients)}")
        await sio.connect(server.url, auth={"token": token}, transports=["websocket"])
        return recorder

    yield connect
    for sio in clients:
        if sio.connected:
            await sio.disconnect()
    await asyncio.sleep(0)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def send(streamer: Recorder, stream: str, at: datetime, *, loss: float, fps: float = 30):
    answer = await streamer.sio.call(
        "stream:stats:update",
        {
            "streamId": stream,
            "stats": {"bitrate": 2500, "fps": fps, "packetLoss": loss, "latency": 40},
            "timestamp": iso(at),
        },
        timeout=10,
    )
    assert answer["ok"], answer


async def eventually(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_a_congestion_episode_is_raised_and_cleared_once_for_streamer_and_monitor(
    start_server, connect, conn
):
    server = start_server()
    stream, other = str(uuid.uuid4()), str(uuid.uuid4())
    streamer = await connect(server, "streamer", [stream])
    monitor = await connect(server, "moderator")
    limited = await connect(server, "analyst", [stream])
    bystander = await connect(server, "streamer", [other])
    viewer = await connect(server, "viewer", [stream])

    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    losses = [0.2, 0.3, 9.0, 12.0, 15.0, 11.0, 0.5, 4.0, 0.1, 0.2, 0.3, 0.1]
    times = [start + timedelta(seconds=5 * i) for i in range(len(losses))]
    for at, loss in zip(times, losses, strict=True):
        await send(streamer, stream, at, loss=loss)

    await eventually(lambda: len(monitor.alerts) >= 2 and len(streamer.alerts) >= 2)
    await asyncio.sleep(0.5)  # anything extra would arrive by now
    for client in (streamer, monitor, limited):
        assert client.states() == ["raised", "cleared"]
        raised, cleared = client.alerts
        assert raised["streamId"] == stream and raised["type"] == "packet_loss_high"
        assert raised["value"] == 12.0 and raised["threshold"] == 5.0
        assert raised["startedAt"] == iso(times[2])
        assert "endedAt" not in raised
        # 0.5 then 4.0 are good (not above 5 %): the clearing streak starts at the 0.5.
        assert cleared["endedAt"] == iso(times[6])
        assert cleared["startedAt"] == iso(times[2])
    assert bystander.alerts == [] and viewer.alerts == []

    rows = await conn.fetch("SELECT * FROM stream_alerts")
    assert len(rows) == 1
    assert rows[0]["raised_at"] == times[2] and rows[0]["cleared_at"] == times[6]
    warnings = [line for line in server.log().splitlines() if "WARNING" in line]
    assert sum("packet_loss_high on stream" in line for line in warnings) == 1


async def test_an_open_episode_survives_a_restart_without_a_second_raise(
    start_server, connect, conn
):
    server = start_server()
    stream = str(uuid.uuid4())
    streamer = await connect(server, "streamer", [stream])
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    for i in range(3):
        await send(streamer, stream, start + timedelta(seconds=i), loss=0, fps=12)
    await eventually(lambda: streamer.states() == ["raised"])
    await streamer.sio.disconnect()
    server.kill()

    server = start_server()
    streamer = await connect(server, "streamer", [stream])
    monitor = await connect(server, "admin")
    later = start + timedelta(seconds=10)
    fps = [10, 11, 9, 30, 30, 30]
    for i, value in enumerate(fps):
        await send(streamer, stream, later + timedelta(seconds=i), loss=0, fps=value)
    # The clear is the stream's last event: whatever came before it has arrived with it.
    await eventually(lambda: "cleared" in streamer.states() and "cleared" in monitor.states())
    for client in (streamer, monitor):
        assert client.states() == ["cleared"]
        assert client.alerts[0]["type"] == "fps_low"
        assert client.alerts[0]["startedAt"] == iso(start)
    assert await conn.fetchval("SELECT count(*) FROM stream_alerts") == 1


# The first insert and the first update of `stream_alerts` lose their connection: the backend
# running them is terminated, as when the server restarts or a proxy drops it mid-statement.
# Sequences are not transactional, so each counts its attempts across the rollback.
LOSE_FIRST_WRITES = """
CREATE SEQUENCE lose_insert;
CREATE SEQUENCE lose_update;
CREATE FUNCTION lose_first_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF nextval(CASE TG_OP WHEN 'INSERT' THEN 'lose_insert' ELSE 'lose_update' END) = 1 THEN
        PERFORM pg_terminate_backend(pg_backend_pid());
        PERFORM pg_sleep(5);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER lose_first_write BEFORE INSERT OR UPDATE ON stream_alerts
    FOR EACH ROW EXECUTE FUNCTION lose_first_write();
"""


@pytest.fixture
async def lose_first_alert_writes(conn: asyncpg.Connection) -> AsyncIterator[None]:
    await conn.execute(LOSE_FIRST_WRITES)
    try:
        yield
    finally:
        await conn.execute(
            "DROP TRIGGER lose_first_write ON stream_alerts; DROP FUNCTION lose_first_write(); "
            "DROP SEQUENCE lose_insert; DROP SEQUENCE lose_update"
        )


async def test_a_raise_and_a_clear_lost_with_the_connection_are_made_by_the_next_sample(
    start_server, connect, conn, lose_first_alert_writes
):
    server = start_server()
    stream = str(uuid.uuid4())
    streamer = await connect(server, "streamer", [stream])
    monitor = await connect(server, "moderator")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    losses = [9, 9, 9, 9, 1, 1, 1, 1, 1]
    times = [start + timedelta(seconds=5 * i) for i in range(len(losses))]
    for at, loss in zip(times, losses, strict=True):
        await send(streamer, stream, at, loss=loss)
        await asyncio.sleep(0.1)  # the hook runs after the acknowledgement

    await eventually(lambda: len(streamer.alerts) >= 2 and len(monitor.alerts) >= 2)
    await asyncio.sleep(0.5)
    for client in (streamer, monitor):
        assert client.states() == ["raised", "cleared"]
        assert client.alerts[0]["startedAt"] == iso(times[0])
        assert client.alerts[1]["endedAt"] == iso(times[4])
    rows = await conn.fetch("SELECT raised_at, cleared_at FROM stream_alerts")
    assert [(r["raised_at"], r["cleared_at"]) for r in rows] == [(times[0], times[4])]
    # Both writes really failed once before they were made.
    assert await conn.fetchval("SELECT last_value FROM lose_insert") >= 2
    assert await conn.fetchval("SELECT last_value FROM lose_update") >= 2
    assert server.log().count("next sample retries") == 2


async def seed_drop(conn: asyncpg.Connection, stream: uuid.UUID, end: datetime) -> None:
    """Ten minutes of samples up to `end`: a two-minute drop to a fifth in the middle."""
    times, values = [], []
    for i in range(120):
        times.append(end - timedelta(seconds=5 * (120 - i)))
        values.append(500.0 if 60 <= i < 84 else 2500.0)
    await conn.execute(
        "INSERT INTO stream_stats (time, stream_id, bitrate_kbps) "
        "SELECT * FROM unnest($1::timestamptz[], $2::uuid[], $3::float8[])",
        times,
        [stream] * len(times),
        values,
    )


async def run_drops_job(make_settings, database_url: str, now: datetime) -> int:
    pool = await create_pool(database_url, max_size=2)
    try:
        return await drops.run(JobContext(make_settings(), pool, now))
    finally:
        await pool.close()


async def wait_listening(*servers: ServerProcess) -> None:
    await eventually(lambda: all("relaying job alerts" in s.log() for s in servers))


async def test_a_bitrate_drop_found_by_the_job_reaches_each_client_once(
    start_server, connect, conn, make_settings, database_url
):
    server = start_server()
    stream = uuid.uuid4()
    streamer = await connect(server, "streamer", [str(stream)])
    monitor = await connect(server, "moderator")
    await wait_listening(server)

    now = datetime.now(UTC)
    await seed_drop(conn, stream, now)
    assert await run_drops_job(make_settings, database_url, now) == 2
    await eventually(lambda: len(streamer.alerts) >= 2 and len(monitor.alerts) >= 2)
    # Running again announces nothing new.
    assert await run_drops_job(make_settings, database_url, now + timedelta(seconds=15)) == 0
    await asyncio.sleep(0.5)
    for client in (streamer, monitor):
        assert client.states("bitrate_drop") == ["raised", "cleared"]
        assert client.alerts[0]["value"] == 500.0
        assert client.alerts[0]["threshold"] == 1250.0


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.parametrize("with_redis", [False, True], ids=["no-redis", "redis"])
async def test_two_nodes_deliver_a_job_alert_once_per_client(
    start_server, connect, conn, make_settings, database_url, with_redis
):
    env = {}
    if with_redis:
        client = redis.Redis.from_url(REDIS_URL)
        client.flushdb()
        client.close()
        env = {"REDIS_URL": REDIS_URL}
    a, b = start_server(env=env), start_server(env=env)
    stream = uuid.uuid4()
    clients = [
        await connect(a, "streamer", [str(stream)]),
        await connect(a, "moderator"),
        await connect(b, "admin"),
        await connect(b, "analyst", [str(stream)]),
    ]
    await wait_listening(a, b)

    now = datetime.now(UTC)
    await seed_drop(conn, stream, now)
    assert await run_drops_job(make_settings, database_url, now) == 2
    await eventually(lambda: all(len(c.alerts) >= 2 for c in clients))
    await asyncio.sleep(1.0)  # a duplicate from the other node would have arrived by now
    for c in clients:
        assert c.states("bitrate_drop") == ["raised", "cleared"]


@pytest.mark.redis
@pytest.mark.slow
async def test_a_threshold_alert_reaches_a_monitor_on_another_node_once(start_server, connect):
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    client.close()
    env = {"REDIS_URL": REDIS_URL}
    a, b = start_server(env=env), start_server(env=env)
    stream = str(uuid.uuid4())
    streamer = await connect(a, "streamer", [stream])
    here, there = await connect(a, "moderator"), await connect(b, "moderator")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    for i, loss in enumerate([9, 9, 9, 0, 0, 0]):
        await send(streamer, stream, start + timedelta(seconds=i), loss=loss)
    await eventually(lambda: all(len(c.alerts) >= 2 for c in (streamer, here, there)))
    await asyncio.sleep(1.0)
    for c in (streamer, here, there):
        assert c.states() == ["raised", "cleared"]


def as_login(url: str, user: str, password: str) -> str:
    """The same database URL, logging in as another user."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""  # empty: the local socket, as in postgresql:///db
    netloc = f"{user}:{password}@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
async def analyst(conn: asyncpg.Connection, database_url: str) -> AsyncIterator[str]:
    """A login of the read-only analyst role; yields its database URL."""
    name = f"analyst_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    await conn.execute(
        f"CREATE ROLE {name} LOGIN PASSWORD '{password}' IN ROLE streamstats_analyst"
    )
    try:
        yield as_login(database_url, name, password)
    finally:
        await conn.execute(f"DROP ROLE {name}")


def forged(stream: str) -> list[str]:
    base = {
        "streamId": stream,
        "type": "bitrate_drop",
        "state": "raised",
        "value": 1.0,
        "threshold": 2.0,
        "startedAt": "2026-01-01T00:00:00.000Z",
    }
    return [
        json.dumps(base),
        json.dumps({**base, "type": "<script>alert(1)</script>", "admin": True, "extra": [1, 2]}),
        json.dumps({**base, "message": "x" * 7000}),
        json.dumps({"streamId": stream}),
        "1",  # an outbox id (the table is empty): only a hint to read the table
        "not json at all",
    ]


async def test_an_analyst_notify_reaches_no_client(start_server, connect, conn, analyst):
    server = start_server()
    stream = str(uuid.uuid4())
    streamer = await connect(server, "streamer", [stream])
    monitor = await connect(server, "moderator")
    await wait_listening(server)

    login = await asyncpg.connect(analyst)
    try:
        assert await login.fetchval("SELECT pg_has_role('streamstats_analyst', 'USAGE')")
        for payload in forged(stream):
            await login.execute("SELECT pg_notify($1, $2)", ALERT_CHANNEL, payload)
        # The analyst may read the outbox but not write it.
        assert await login.fetchval("SELECT count(*) FROM alert_events") == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await login.execute(
                "INSERT INTO alert_events (type, stream_id, data) "
                "VALUES ('alert.raised', $1, '{}')",
                uuid.UUID(stream),
            )
    finally:
        await login.close()
    await asyncio.sleep(1.5)
    assert streamer.alerts == [] and monitor.alerts == []

    # A real alert, written to the outbox as the service does, still reaches both once.
    real = alert_payload(stream, "bitrate_drop", "raised", 400.0, 1250.0, datetime.now(UTC))
    async with conn.transaction():
        await outbox.publish(conn, real)
    await eventually(lambda: len(streamer.alerts) == 1 and len(monitor.alerts) == 1)
    await asyncio.sleep(0.5)
    assert streamer.alerts == [real] and monitor.alerts == [real]


RELAY_BACKENDS = """
SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE '%json_agg%'
"""


async def test_an_alert_committed_while_the_relay_is_disconnected_arrives_once_after(
    start_server, connect, conn
):
    server = start_server()
    stream = str(uuid.uuid4())
    streamer = await connect(server, "streamer", [stream])
    monitor = await connect(server, "moderator")
    await wait_listening(server)

    raised = alert_payload(stream, "bitrate_drop", "raised", 400.0, 1250.0, datetime.now(UTC))
    async with conn.transaction():
        await outbox.publish(conn, raised)
        # The relay's connection dies before the commit: nobody is listening for its NOTIFY.
        assert await conn.fetchval(f"SELECT count(*) FROM ({RELAY_BACKENDS}) t") == 1
    await eventually(lambda: "alert relay lost its connection" in server.log())
    await eventually(lambda: len(streamer.alerts) == 1 and len(monitor.alerts) == 1)
    # Later alerts still flow, and the caught-up one is not sent again.
    cleared = alert_payload(
        stream, "bitrate_drop", "cleared", 900.0, 1250.0, datetime.now(UTC), datetime.now(UTC)
    )
    async with conn.transaction():
        await outbox.publish(conn, cleared)
    await eventually(lambda: len(streamer.alerts) == 2 and len(monitor.alerts) == 2)
    await asyncio.sleep(1.0)
    assert streamer.alerts == [raised, cleared] and monitor.alerts == [raised, cleared]


# --- rebuffering_high, from viewers' beacons ---------------------------------------------------


async def watch(viewer, stream: str, at: datetime, *, stalled_ms: float) -> None:
    """One view's two beacons 10 s apart: 10 s of playback, `stalled_ms` of it stalled."""
    view = str(uuid.uuid4())
    for offset, watched, stalled in ((0, 0.0, 0.0), (10, 10_000 - stalled_ms, stalled_ms)):
        answer = await viewer.sio.call(
            "stream:viewer:stats",
            {
                "streamId": stream,
                "viewId": view,
                "timestamp": iso(at + timedelta(seconds=offset)),
                "state": "playing",
                "startupTime": 800,
                "watchTime": watched,
                "stalls": {"count": 1 if stalled else 0, "duration": stalled},
                "renditionChanges": {"up": 0, "down": 0},
            },
            timeout=10,
        )
        assert answer["ok"], answer


async def run_job(make_settings, database_url: str, now: datetime, **settings) -> int:
    pool = await create_pool(database_url, max_size=2)
    try:
        return await rebuffering.run(JobContext(make_settings(**settings), pool, now))
    finally:
        await pool.close()


@pytest.mark.slow
async def test_rebuffering_across_enough_views_is_raised_and_cleared_once_per_client(
    start_server, connect, make_settings, database_url, conn
):
    a, b = start_server(), start_server()
    stream = str(uuid.uuid4())
    clients = [
        await connect(a, "streamer", [stream]),
        await connect(a, "moderator"),
        await connect(b, "admin"),
    ]
    viewer = await connect(b, "viewer", [stream])
    await wait_listening(a, b)
    start = datetime.now(UTC) - timedelta(seconds=40)

    # Two views stalling a third of the time: not enough views to say so (3 needed).
    for _ in range(2):
        await watch(viewer, stream, start, stalled_ms=3_000)
    now = start + timedelta(seconds=20)
    assert await run_job(make_settings, database_url, now) == 0
    # A third, smooth view: 6 s stalled of 30 s, 20 %, over the 5 % threshold.
    await watch(viewer, stream, start, stalled_ms=0)
    assert await run_job(make_settings, database_url, now) == 1
    # Still rebuffering, or hovering above the clear threshold: nothing new.
    assert await run_job(make_settings, database_url, now + timedelta(seconds=15)) == 0
    assert await run_job(make_settings, database_url, now, alert_rebuffer_pct=50) == 0
    # The viewers have gone: the window holds no beacons any more.
    later = now + timedelta(minutes=5)
    assert await run_job(make_settings, database_url, later) == 1
    assert await run_job(make_settings, database_url, later) == 0

    await eventually(lambda: all(len(c.alerts) >= 2 for c in clients))
    await asyncio.sleep(1.0)  # a duplicate from the other node would have arrived by now
    for client in clients:
        assert client.states("rebuffering_high") == ["raised", "cleared"]
        raised = client.alerts[0]
        assert raised["value"] == pytest.approx(100 * 6_000 / 30_000)
        assert raised["threshold"] == 5.0
    assert viewer.alerts == []  # viewers get no alerts
    episodes = await conn.fetch(
        "SELECT * FROM stream_alerts WHERE stream_id = $1 AND type = 'rebuffering_high'",
        uuid.UUID(stream),
    )
    assert len(episodes) == 1 and episodes[0]["cleared_at"] is not None
    events = await conn.fetchval(
        "SELECT count(*) FROM alert_events WHERE stream_id = $1", uuid.UUID(stream)
    )
    assert events == 2
