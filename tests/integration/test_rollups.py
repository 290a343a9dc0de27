"""Rollups are exact: every view row equals the aggregate of the raw rows, late rows included."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs import rollups
from jobs.base import JobContext
from jobs.runner import start_scheduler
from streamstats import db

STREAMS = [uuid.UUID(int=n) for n in (1, 2, 3)]
BASE = datetime(2026, 3, 10, tzinfo=UTC)
VIEWS = {"stream_stats_1m": "minute", "stream_stats_1h": "hour", "stream_stats_1d": "day"}
METRICS = (
    "samples",
    "bitrate_kbps_avg",
    "bitrate_kbps_min",
    "bitrate_kbps_max",
    "bitrate_kbps_p50",
    "bitrate_kbps_p95",
    "fps_avg",
    "fps_min",
    "packet_loss_pct_avg",
    "packet_loss_pct_max",
    "latency_ms_avg",
    "latency_ms_p95",
    "latency_ms_max",
    "good_samples",
    "fair_samples",
    "poor_samples",
)
INSERT = """
INSERT INTO stream_stats (time, stream_id, bitrate_kbps, fps, packet_loss_pct, latency_ms, quality)
VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING
"""
COPY_COLUMNS = [
    "time",
    "stream_id",
    "bitrate_kbps",
    "fps",
    "packet_loss_pct",
    "latency_ms",
    "quality",
]

# (time, stream_id, bitrate_kbps, fps, packet_loss_pct, latency_ms, quality)
Row = tuple[datetime, uuid.UUID, float | None, float | None, float | None, float | None, str | None]


# --- the expected aggregates, computed in Python from the rows the test wrote ---------------


def bucket_of(t: datetime, width: str) -> datetime:
    t = t.astimezone(UTC)
    if width == "minute":
        return t.replace(second=0, microsecond=0)
    if width == "hour":
        return t.replace(minute=0, second=0, microsecond=0)
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def percentile_cont(values: list[float], fraction: float) -> float | None:
    """PostgreSQL's percentile_cont: linear interpolation between the closest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def aggregate(rows: list[Row]) -> dict[str, Any]:
    def present(i: int) -> list[float]:
        return [r[i] for r in rows if r[i] is not None]  # type: ignore[misc]

    def avg(v: list[float]) -> float | None:
        return sum(v) / len(v) if v else None

    bitrate, fps, loss, latency = present(2), present(3), present(4), present(5)
    return {
        "samples": len(rows),
        "bitrate_kbps_avg": avg(bitrate),
        "bitrate_kbps_min": min(bitrate, default=None),
        "bitrate_kbps_max": max(bitrate, default=None),
        "bitrate_kbps_p50": percentile_cont(bitrate, 0.5),
        "bitrate_kbps_p95": percentile_cont(bitrate, 0.95),
        "fps_avg": avg(fps),
        "fps_min": min(fps, default=None),
        "packet_loss_pct_avg": avg(loss),
        "packet_loss_pct_max": max(loss, default=None),
        "latency_ms_avg": avg(latency),
        "latency_ms_p95": percentile_cont(latency, 0.95),
        "latency_ms_max": max(latency, default=None),
        "good_samples": sum(r[6] == "good" for r in rows),
        "fair_samples": sum(r[6] == "fair" for r in rows),
        "poor_samples": sum(r[6] == "poor" for r in rows),
    }


def expected(rows: Iterable[Row], width: str) -> dict[tuple[datetime, uuid.UUID], dict[str, Any]]:
    groups: dict[tuple[datetime, uuid.UUID], list[Row]] = {}
    for row in rows:
        groups.setdefault((bucket_of(row[0], width), row[1]), []).append(row)
    return {key: aggregate(group) for key, group in groups.items()}


def close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


async def fetch_buckets(
    conn: asyncpg.Connection, relation: str
) -> dict[tuple[datetime, uuid.UUID], dict[str, Any]]:
    records = await conn.fetch(f"SELECT * FROM {relation}")
    found: dict[tuple[datetime, uuid.UUID], dict[str, Any]] = {}
    for record in records:
        key = (record["bucket"], record["stream_id"])
        assert key not in found, f"{relation} has two rows for {key}"
        found[key] = {m: record[m] for m in METRICS}
    return found


async def assert_exact(conn: asyncpg.Connection, rows: Iterable[Row], relations: dict[str, str]):
    """Every row of each relation equals the aggregate of `rows` for its bucket, and none lacks."""
    rows = list(rows)
    for relation, width in relations.items():
        want = expected(rows, width)
        got = await fetch_buckets(conn, relation)
        assert sorted(got) == sorted(want), f"{relation}: buckets differ"
        for key, values in want.items():
            for metric, value in values.items():
                assert close(got[key][metric], value), (
                    f"{relation} {key} {metric}: {got[key][metric]!r} != {value!r}"
                )


# --- the property ----------------------------------------------------------------------------

# Times that crowd bucket edges so that rows share minutes, hours and days.
times = st.builds(
    lambda day, hour, minute, second: (
        BASE + timedelta(days=day, hours=hour, minutes=minute) + timedelta(seconds=second)
    ),
    st.sampled_from([-2, -1]),
    st.sampled_from([0, 1, 23]),
    st.sampled_from([0, 1, 59]),
    st.integers(0, 59),
)
metric = st.one_of(st.none(), st.floats(0, 10_000, allow_nan=False, allow_infinity=False))
rows_st = st.tuples(
    times,
    st.sampled_from(STREAMS),
    metric,
    metric,
    st.one_of(st.none(), st.floats(0, 100)),
    metric,
    st.sampled_from([None, "good", "fair", "poor"]),
)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), st.lists(rows_st, min_size=1, max_size=8)),
        st.tuples(st.just("copy"), st.lists(rows_st, min_size=1, max_size=8)),
        # Refresh "now", in seconds around the data: buckets complete or not at that moment.
        st.tuples(st.just("refresh"), st.integers(-2 * 86400, 86400)),
        st.tuples(st.just("delete"), st.integers(0, 10_000)),
        st.tuples(st.just("update"), st.integers(0, 10_000), metric),
    ),
    min_size=1,
    max_size=14,
)


async def play(url: str, script: list[tuple[Any, ...]]) -> None:
    from tests import dbutil

    await dbutil.clean(url)
    pool = await db.create_pool(url, max_size=2)
    conn = await asyncpg.connect(url)
    stored: dict[tuple[uuid.UUID, datetime], Row] = {}
    try:
        for step in script:
            if step[0] in ("insert", "copy"):
                batch = [r for r in step[1] if (r[1], r[0]) not in stored]
                fresh: dict[tuple[uuid.UUID, datetime], Row] = {}
                for r in batch:  # the first of two rows with one key wins, as in the database
                    fresh.setdefault((r[1], r[0]), r)
                if step[0] == "insert":
                    async with conn.transaction():
                        await conn.executemany(INSERT, batch)
                else:
                    await conn.copy_records_to_table(
                        "stream_stats", records=list(fresh.values()), columns=COPY_COLUMNS
                    )
                for key, row in fresh.items():
                    stored.setdefault(key, row)
            elif step[0] == "refresh":
                ctx = JobContext(settings=None, pool=pool, now=BASE + timedelta(seconds=step[1]))  # type: ignore[arg-type]
                await rollups.run(ctx)
            elif stored:
                key = sorted(stored)[step[1] % len(stored)]
                if step[0] == "delete":
                    await conn.execute(
                        "DELETE FROM stream_stats WHERE stream_id = $1 AND time = $2", *key
                    )
                    del stored[key]
                else:
                    await conn.execute(
                        "UPDATE stream_stats SET bitrate_kbps = $3 WHERE stream_id = $1 "
                        "AND time = $2",
                        *key,
                        step[2],
                    )
                    old = stored[key]
                    stored[key] = (old[0], old[1], step[2], *old[3:])  # type: ignore[assignment]
        # Mid-flight, some buckets materialized and some pending: the views are exact anyway.
        await assert_exact(conn, stored.values(), VIEWS)
        # Once everything is complete and refreshed, the materialized tables alone are exact.
        ctx = JobContext(settings=None, pool=pool, now=BASE + timedelta(days=2))  # type: ignore[arg-type]
        await rollups.run(ctx)
        assert await conn.fetchval("SELECT count(*) FROM rollup_invalidations") == 0
        assert await conn.fetchval("SELECT count(*) FROM rollup_pending") == 0
        await assert_exact(
            conn,
            stored.values(),
            {"rollup_1m": "minute", "rollup_1h": "hour", "rollup_1d": "day"},
        )
        await assert_exact(conn, stored.values(), VIEWS)
    finally:
        await conn.close()
        await pool.close()


@pytest.mark.slow
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(script=steps)
def test_views_equal_the_aggregates_of_raw_rows_after_any_writes_and_refreshes(
    database_url, script
):
    asyncio.run(play(database_url, script))


# --- the traps ---------------------------------------------------------------------------------


def sample(t: datetime, stream: uuid.UUID, bitrate: float) -> Row:
    return (t, stream, bitrate, 30.0, 0.5, 80.0, "good")


async def test_a_writer_committing_after_the_refresh_read_the_log_is_not_lost(database_url):
    """The writer's entry for a minute another transaction already logged is its own."""
    pool = await db.create_pool(database_url, max_size=2)
    first = await asyncpg.connect(database_url)
    late = await asyncpg.connect(database_url)
    minute = BASE - timedelta(hours=3)
    rows = [sample(minute + timedelta(seconds=1), STREAMS[0], 1000.0)]
    try:
        await first.executemany(INSERT, rows)
        # A writer inserts into the same minute and is slow to commit...
        slow = late.transaction()
        await slow.start()
        slow_row = sample(minute + timedelta(seconds=2), STREAMS[0], 3000.0)
        await late.executemany(INSERT, [slow_row])
        # ...while the refresh consumes the minute's log entries and materializes it.
        await rollups.run(JobContext(settings=None, pool=pool, now=BASE))  # type: ignore[arg-type]
        await slow.commit()
        rows.append(slow_row)
        # Never stale: the views count the late commit before any refresh...
        await assert_exact(first, rows, VIEWS)
        # ...and the next refresh materializes it.
        await rollups.run(JobContext(settings=None, pool=pool, now=BASE))  # type: ignore[arg-type]
        await assert_exact(first, rows, {"rollup_1m": "minute", "rollup_1h": "hour"})
    finally:
        await first.close()
        await late.close()
        await pool.close()


async def test_a_refresh_recomputes_only_the_buckets_that_changed(database_url):
    pool = await db.create_pool(database_url, max_size=2)
    conn = await asyncpg.connect(database_url)
    try:
        rows = [
            sample(BASE - timedelta(hours=h, seconds=s), stream, 1000.0 + s)
            for h in range(1, 6)
            for s in range(0, 600, 10)
            for stream in STREAMS
        ]
        await conn.executemany(INSERT, rows)
        ctx = JobContext(settings=None, pool=pool, now=BASE)  # type: ignore[arg-type]
        await rollups.run(ctx)
        late = sample(BASE - timedelta(hours=4, seconds=5), STREAMS[1], 99_000.0)
        await conn.executemany(INSERT, [late])
        done = await _refresh(pool, BASE)
        assert (done.minutes, done.hours, done.days) == (1, 1, 1)
        await assert_exact(conn, [*rows, late], VIEWS)
    finally:
        await conn.close()
        await pool.close()


async def _refresh(pool: asyncpg.Pool, now: datetime) -> rollups.Refreshed:
    async with pool.acquire() as conn, conn.transaction():
        return await rollups.refresh(conn, now)


@pytest.mark.slow
async def test_rollups_stay_exact_across_a_restart_of_the_job_runner(make_settings, database_url):
    """Two scheduler lifetimes on the real clock: state lives in the database, not the runner."""
    settings = make_settings(rollup_interval=timedelta(seconds=0.5))
    conn = await asyncpg.connect(database_url)
    now = datetime.now(UTC)
    rows = [
        sample(now - timedelta(minutes=m, seconds=s), stream, 500.0 + 7 * m + s)
        for m in (0, 3, 70, 1500)
        for s in (5, 20, 40)
        for stream in STREAMS[:2]
    ]
    late = [sample(now - timedelta(minutes=70, seconds=s), STREAMS[0], 50.0 * s) for s in (1, 2)]
    try:
        await conn.executemany(INSERT, rows)
        for extra in ([], late):
            await conn.executemany(INSERT, extra)
            pool = await db.create_pool(database_url, max_size=3)
            scheduler = await start_scheduler(settings, pool, jobs=["rollups"])
            try:
                await _wait_for_runs(conn, "rollups", after=datetime.now(UTC))
            finally:
                await scheduler.stop()
                await pool.close()
            await assert_exact(conn, rows + extra, VIEWS)
        # Hours and days that are complete are materialized, not computed live.
        hour = bucket_of(now - timedelta(minutes=70), "hour")
        if hour + timedelta(hours=1) <= datetime.now(UTC) - timedelta(seconds=1):
            materialized = await conn.fetchval(
                "SELECT samples FROM rollup_1h WHERE stream_id = $1 AND bucket = $2",
                STREAMS[0],
                hour,
            )
            assert materialized == len(
                [r for r in rows + late if r[1] == STREAMS[0] and bucket_of(r[0], "hour") == hour]
            )
    finally:
        await conn.close()


async def _wait_for_runs(conn: asyncpg.Connection, job: str, after: datetime) -> None:
    for _ in range(100):
        done = await conn.fetchval(
            "SELECT count(*) FROM job_runs WHERE job = $1 AND status = 'succeeded' "
            "AND started_at > $2",
            job,
            after,
        )
        if done:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no successful {job} run within 10 s")


async def test_rows_loaded_with_copy_by_an_analyst_are_rolled_up(database_url):
    pool = await db.create_pool(database_url, max_size=2)
    conn = await asyncpg.connect(database_url)
    try:
        rows = [
            sample(BASE - timedelta(days=1, minutes=m), STREAMS[2], 100.0 * m) for m in range(90)
        ]
        await conn.copy_records_to_table("stream_stats", records=rows, columns=COPY_COLUMNS)
        await rollups.run(JobContext(settings=None, pool=pool, now=BASE))  # type: ignore[arg-type]
        await assert_exact(
            conn, rows, {"rollup_1m": "minute", "rollup_1h": "hour", "rollup_1d": "day"}
        )
    finally:
        await conn.close()
        await pool.close()


async def test_views_have_the_documented_columns(conn):
    for view in VIEWS:
        columns = [
            r[0]
            for r in await conn.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_name = $1 "
                "ORDER BY ordinal_position",
                view,
            )
        ]
        assert columns == ["bucket", "stream_id", *METRICS]


async def test_the_analyst_role_reads_the_views_and_cannot_write(conn):
    await conn.execute(
        "INSERT INTO stream_stats (time, stream_id, bitrate_kbps) VALUES ($1, $2, 1000)",
        BASE,
        STREAMS[0],
    )
    async with conn.transaction():
        await conn.execute("SET LOCAL ROLE streamstats_analyst")
        assert await conn.fetchval("SELECT samples FROM stream_stats_1h") == 1
        assert await conn.fetchval("SELECT count(*) FROM stream_stats_1d") == 1
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM stream_stats")
    async with conn.transaction():
        await conn.execute("SET LOCAL ROLE streamstats_analyst")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("INSERT INTO rollup_1m SELECT * FROM rollup_1m")
