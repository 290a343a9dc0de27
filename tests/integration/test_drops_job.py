"""The drops job on a real database: episodes stored once, announced once, caught up later."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from analytics.alerts import ALERT_CHANNEL
from jobs import drops
from jobs.base import JobContext
from streamstats.db import create_pool

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
STEP = timedelta(seconds=5)


async def seed(conn: asyncpg.Connection, stream: uuid.UUID, start: datetime, *segments) -> None:
    """Samples every 5 s from `start`: segments of (duration, bitrate or None for silence)."""
    times, values, t = [], [], start
    for duration, value in segments:
        end = t + duration
        while t < end:
            if value is not None:
                times.append(t)
                values.append(float(value))
            t += STEP
    await conn.execute(
        "INSERT INTO stream_stats (time, stream_id, bitrate_kbps, fps, quality) "
        "SELECT t, $2, b, 30, 'good' FROM unnest($1::timestamptz[], $3::float8[]) AS x(t, b)",
        times,
        stream,
        values,
    )


@pytest.fixture
async def pool(database_url):
    pool = await create_pool(database_url, max_size=2)
    yield pool
    await pool.close()


class Listener:
    """A separate connection LISTENing on the alert channel, as an ingest node does.

    Each notification names the outbox row written with the episode; `received` holds the
    alerts read from those rows, in the order notified.
    """

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.received: list[dict] = []
        self._reads: list[asyncio.Task[None]] = []
        self._turn = asyncio.Lock()  # one query at a time on the connection, in notified order

    def __call__(self, conn, pid, channel, payload) -> None:
        self._reads.append(asyncio.ensure_future(self._read(int(payload))))

    async def _read(self, event_id: int) -> None:
        async with self._turn:
            data = await self.conn.fetchval(
                "SELECT data::text FROM alert_events WHERE id = $1", event_id
            )
            self.received.append(json.loads(data))

    async def settle(self) -> list[dict]:
        await asyncio.sleep(0.2)
        await asyncio.gather(*self._reads)
        return self.received


@pytest.fixture
async def listener(database_url):
    conn = await asyncpg.connect(database_url)
    listen = Listener(await asyncpg.connect(database_url))
    await conn.add_listener(ALERT_CHANNEL, listen)
    yield listen
    await conn.close()
    await listen.conn.close()


async def run_at(make_settings, pool, now: datetime, **overrides) -> int:
    return await drops.run(JobContext(make_settings(**overrides), pool, now))


async def test_a_step_drop_is_stored_once_and_announced_once(conn, pool, make_settings, listener):
    dropping, steady = uuid.uuid4(), uuid.uuid4()
    minutes = timedelta(minutes=1)
    await seed(conn, dropping, T0, (10 * minutes, 2500), (2 * minutes, 600), (5 * minutes, 2400))
    await seed(conn, steady, T0, (17 * minutes, 1800))
    end = T0 + 17 * minutes

    assert await run_at(make_settings, pool, end) == 2
    assert await run_at(make_settings, pool, end) == 0
    assert await run_at(make_settings, pool, end + minutes) == 0

    rows = await conn.fetch("SELECT * FROM bitrate_drops")
    assert len(rows) == 1
    drop = rows[0]
    assert drop["stream_id"] == dropping
    assert T0 + 10 * minutes <= drop["started_at"] <= T0 + 10 * minutes + timedelta(seconds=30)
    assert T0 + 12 * minutes <= drop["ended_at"] <= T0 + 12 * minutes + timedelta(seconds=30)
    assert drop["baseline_kbps"] == 2500
    assert drop["observed_kbps"] == 600
    assert drop["drop_pct"] == pytest.approx(76)

    alerts = await listener.settle()
    assert [a["state"] for a in alerts] == ["raised", "cleared"]
    assert {a["streamId"] for a in alerts} == {str(dropping)}
    assert {a["type"] for a in alerts} == {"bitrate_drop"}
    assert alerts[1]["endedAt"].startswith(drop["ended_at"].strftime("%Y-%m-%dT%H:%M:%S"))


async def test_runs_every_15_seconds_find_the_same_single_episode(
    conn, pool, make_settings, listener
):
    stream = uuid.uuid4()
    minutes = timedelta(minutes=1)
    await seed(conn, stream, T0, (8 * minutes, 3000), (3 * minutes, 900), (4 * minutes, 3000))
    whole = None
    # The first run sees the first 6 minutes (its look-back is the default hour).
    now = T0 + 6 * minutes
    while now <= T0 + 16 * minutes:
        await run_at(make_settings, pool, now)
        rows = await conn.fetch("SELECT started_at, ended_at FROM bitrate_drops")
        assert len(rows) <= 1
        if rows and rows[0]["ended_at"] is None:
            # While open, it is announced as raised and not yet cleared (NOTIFY is delivered
            # to the listening connection shortly after the commit).
            for _ in range(40):
                if listener.received:
                    break
                await asyncio.sleep(0.05)
            assert [a["state"] for a in listener.received] == ["raised"]
        whole = rows
        now += timedelta(seconds=15)
    assert whole is not None and len(whole) == 1 and whole[0]["ended_at"] is not None
    assert [a["state"] for a in await listener.settle()] == ["raised", "cleared"]


async def test_a_runner_that_was_down_catches_up(conn, pool, make_settings):
    stream = uuid.uuid4()
    minutes = timedelta(minutes=1)
    await seed(conn, stream, T0, (40 * minutes, 2000), (2 * minutes, 200), (18 * minutes, 2000))
    assert await run_at(make_settings, pool, T0 + 10 * minutes) == 0
    # Down for 50 minutes: the next run covers everything since the previous one.
    assert await run_at(make_settings, pool, T0 + 60 * minutes) == 2
    assert await conn.fetchval("SELECT count(*) FROM bitrate_drops") == 1


async def test_the_first_run_looks_back_only_as_configured(conn, pool, make_settings):
    stream = uuid.uuid4()
    minutes = timedelta(minutes=1)
    await seed(conn, stream, T0, (10 * minutes, 2000), (2 * minutes, 200), (10 * minutes, 2000))
    changed = await run_at(
        make_settings, pool, T0 + 60 * minutes, drops_first_lookback=timedelta(minutes=30)
    )
    assert changed == 0
    assert await conn.fetchval("SELECT count(*) FROM bitrate_drops") == 0


async def test_a_stream_going_silent_during_a_drop_closes_it(conn, pool, make_settings):
    stream = uuid.uuid4()
    minutes = timedelta(minutes=1)
    await seed(conn, stream, T0, (10 * minutes, 2000), (1 * minutes, 300))
    await run_at(make_settings, pool, T0 + 11 * minutes)
    assert await conn.fetchval("SELECT ended_at FROM bitrate_drops") is None
    await run_at(make_settings, pool, T0 + 13 * minutes)
    last = await conn.fetchval("SELECT max(time) FROM stream_stats")
    assert await conn.fetchval("SELECT ended_at FROM bitrate_drops") == last


async def test_catching_up_over_hours_goes_in_steps_and_keeps_drops_across_them(
    conn, pool, make_settings, listener
):
    stream = uuid.uuid4()
    minutes = timedelta(minutes=1)
    await seed(
        conn,
        stream,
        T0,
        (69 * minutes, 2000),
        (2 * minutes, 300),  # open across the first step's end (T0 + 70 min)
        (79 * minutes, 2000),
        (3 * minutes, 500),
        (20 * minutes, 2000),
    )
    assert await run_at(make_settings, pool, T0 + 10 * minutes) == 0
    assert await run_at(make_settings, pool, T0 + 3 * 60 * minutes) == 4
    rows = await conn.fetch("SELECT started_at, ended_at FROM bitrate_drops ORDER BY started_at")
    assert len(rows) == 2
    assert T0 + 69 * minutes <= rows[0]["started_at"] < T0 + 70 * minutes < rows[0]["ended_at"]
    assert T0 + 150 * minutes <= rows[1]["started_at"] <= T0 + 151 * minutes
    assert [a["state"] for a in await listener.settle()] == ["raised", "cleared"] * 2
    watermark = await conn.fetchval("SELECT scanned_to FROM bitrate_drops_watermark")
    assert watermark == T0 + 3 * 60 * minutes - drops.settle(make_settings())


async def test_a_streamer_whose_clock_runs_20_seconds_behind_gets_its_drop(
    conn, pool, make_settings, listener
):
    """Samples arrive stamped 20 s in the past while the job runs every 15 s of real time."""
    stream = uuid.uuid4()
    lag = timedelta(seconds=20)
    real = T0
    while real <= T0 + timedelta(minutes=15):
        stamped = real - lag
        bitrate = (
            500.0 if T0 + timedelta(minutes=8) <= stamped < T0 + timedelta(minutes=10) else 2500.0
        )
        await conn.execute(
            "INSERT INTO stream_stats (time, stream_id, bitrate_kbps) VALUES ($1, $2, $3)",
            stamped,
            stream,
            bitrate,
        )
        if (real - T0) % timedelta(seconds=15) == timedelta(0):
            await run_at(make_settings, pool, real)
        real += STEP
    rows = await conn.fetch("SELECT started_at, ended_at FROM bitrate_drops")
    assert len(rows) == 1
    assert T0 + timedelta(minutes=8) <= rows[0]["started_at"] <= T0 + timedelta(minutes=9)
    assert rows[0]["ended_at"] is not None
    assert [a["state"] for a in await listener.settle()] == ["raised", "cleared"]
