"""Retention drops old raw chunks and old 1-minute rollups, and nothing the rollups still need."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from jobs import retention
from jobs.base import JobContext
from streamstats import db
from tests.integration.test_rollups import INSERT, STREAMS, assert_exact, bucket_of, sample

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


async def test_retention_drops_only_what_is_older_than_the_settings(make_settings, database_url):
    settings = make_settings(
        raw_retention=timedelta(days=30), rollup_1m_retention=timedelta(days=90)
    )
    raw_cutoff = NOW - timedelta(days=30)
    ages = [timedelta(days=d) for d in (100, 40, 31)] + [
        # In the chunk that straddles the cutoff: older than the setting, but its chunk holds
        # newer rows too, and drop_chunks only drops whole chunks.
        timedelta(days=30, hours=6),
        timedelta(days=29),
        timedelta(hours=2),
    ]
    rows = [
        sample(NOW - age - timedelta(seconds=s), stream, 1000.0 + s)
        for age in ages
        for s in (0, 20, 40, 70)
        for stream in STREAMS[:2]
    ]
    pool = await db.create_pool(database_url, max_size=2)
    conn = await asyncpg.connect(database_url)
    try:
        # No refresh before: the old buckets are still pending when retention runs.
        await conn.executemany(INSERT, rows)
        changed = await retention.run(JobContext(settings, pool, now=NOW))

        kept = sorted(r[0] for r in await conn.fetch("SELECT time FROM stream_stats"))
        should_keep = sorted(
            {r[0] for r in rows if r[0] >= raw_cutoff.replace(hour=0)}, key=lambda t: t
        )
        assert kept == [t for t in should_keep for _ in range(2)]
        assert any(t < raw_cutoff for t in kept)  # the straddling chunk stays whole
        assert min(kept) >= raw_cutoff - timedelta(days=1)
        chunks_ending_before_cutoff = await conn.fetchval(
            "SELECT count(*) FROM timescaledb_information.chunks "
            "WHERE hypertable_name = 'stream_stats' AND range_end <= $1",
            raw_cutoff,
        )
        assert chunks_ending_before_cutoff == 0

        # Hours and days outlive the raw rows they were computed from, exactly as they were.
        await assert_exact(conn, rows, {"stream_stats_1h": "hour", "stream_stats_1d": "day"})
        # Minutes are kept 90 days.
        minute_cutoff = NOW - timedelta(days=90)
        await assert_exact(
            conn, [r for r in rows if r[0] >= minute_cutoff], {"stream_stats_1m": "minute"}
        )
        dropped_days = {bucket_of(r[0], "day") for r in rows if r[0] < raw_cutoff.replace(hour=0)}
        old_minutes = {(bucket_of(r[0], "minute"), r[1]) for r in rows if r[0] < minute_cutoff}
        assert changed == len(dropped_days) + len(old_minutes)
    finally:
        await conn.close()
        await pool.close()


async def test_retention_deletes_advice_older_than_the_minute_rollups(make_settings, database_url):
    settings = make_settings(rollup_1m_retention=timedelta(days=90))
    stream = STREAMS[0]
    pool = await db.create_pool(database_url, max_size=2)
    conn = await asyncpg.connect(database_url)
    try:
        for days in (100, 91, 89, 1):
            await conn.execute(
                "INSERT INTO stream_advice (stream_id, issued_at, action, target, reasons, "
                "severity, basis) VALUES ($1, $2, 'lower', '{}', '{packet_loss}', 'warning', '{}')",
                stream,
                NOW - timedelta(days=days),
            )
        await retention.run(JobContext(settings, pool, now=NOW))
        kept = [r[0] for r in await conn.fetch("SELECT issued_at FROM stream_advice ORDER BY 1")]
        assert kept == [NOW - timedelta(days=89), NOW - timedelta(days=1)]
    finally:
        await conn.close()
        await pool.close()


async def test_old_alert_events_go_unless_a_delivery_is_still_pending(database_url, make_settings):
    settings = make_settings()
    pool = await db.create_pool(database_url, max_size=2)
    conn = await asyncpg.connect(database_url)
    try:
        endpoint = await conn.fetchval(
            "INSERT INTO webhook_endpoints (url) VALUES ('http://127.0.0.1:9/x') RETURNING id"
        )
        now = datetime.now(UTC)
        ages = {"old delivered": 100, "old pending": 100, "old dead": 95, "recent": 10}
        ids = {}
        for name, days in ages.items():
            ids[name] = await conn.fetchval(
                "INSERT INTO alert_events (type, stream_id, data, created_at) "
                "VALUES ('alert.raised', $1, '{}', $2) RETURNING id",
                uuid.uuid4(),
                now - timedelta(days=days),
            )
            status = name.split()[-1] if name != "recent" else "delivered"
            await conn.execute(
                "INSERT INTO webhook_deliveries (event_id, endpoint_id, stream_id, status) "
                "SELECT id, $2, stream_id, $3 FROM alert_events WHERE id = $1",
                ids[name],
                endpoint,
                status,
            )
        await retention.run(JobContext(settings, pool, now=now))
        left = {r[0] for r in await conn.fetch("SELECT id FROM alert_events")}
        assert left == {ids["old pending"], ids["recent"]}
        assert await conn.fetchval("SELECT count(*) FROM webhook_deliveries") == 2
    finally:
        await conn.close()
        await pool.close()
