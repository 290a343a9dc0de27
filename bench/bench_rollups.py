"""Rollup refresh cost against table size, view query times, and the invalidation trigger's cost.

On a dedicated benchmark database (dropped and re-created, then migrated), for each size:
history of `--streams` streams, one sample a minute each, generated with SQL generate_series
through the normal trigger path; one full refresh; then `--runs` times: one new minute for every
stream (12 samples each, 5 s apart) and the refresh that follows. Then 7-day `stream_stats_1h`
queries (one stream; all streams), a day of one stream from `stream_stats_1m`. With
`--explain`, the plans of the one-stream queries at the largest size (they show whether the
`bucket` / `stream_id` filters reach the pending keys and the raw primary key). Finally the
writer's own batch statement (`write_batch`) with the invalidation trigger on and off.

    .venv/bin/python bench/bench_rollups.py --server postgresql:///streamstats \
        --sizes 1000000 10000000 --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import urllib.parse
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from jobs import rollups
from streamstats import migrations
from streamstats.sql import queries

DATABASE = "streamstats_bench_rollups"

HISTORY = """
INSERT INTO stream_stats (time, stream_id, bitrate_kbps, fps, packet_loss_pct, latency_ms, quality)
SELECT $1::timestamptz - make_interval(mins => m),
       ('00000000-0000-0000-0000-' || lpad(s::text, 12, '0'))::uuid,
       2500 + 1500 * sin(m / 7.0 + s), 24 + 6 * random(), 2 * random(), 40 + 80 * random(),
       (ARRAY['good', 'good', 'fair', 'poor'])[1 + (m + s) % 4]
FROM generate_series(1, $2::int) AS s, generate_series(1, $3::int) AS m
"""

NEW_MINUTE = """
INSERT INTO stream_stats (time, stream_id, bitrate_kbps, fps, packet_loss_pct, latency_ms, quality)
SELECT $1::timestamptz + make_interval(secs => 5 * k),
       ('00000000-0000-0000-0000-' || lpad(s::text, 12, '0'))::uuid,
       2000 + 1000 * random(), 30, random(), 50 + 20 * random(), 'good'
FROM generate_series(1, $2::int) AS s, generate_series(0, 11) AS k
"""

WEEK_ONE_STREAM = """
SELECT * FROM stream_stats_1h
WHERE stream_id = '00000000-0000-0000-0000-000000000007'
  AND bucket >= $1::timestamptz - interval '7 days'
"""
WEEK_ALL_STREAMS = (
    "SELECT * FROM stream_stats_1h WHERE bucket >= $1::timestamptz - interval '7 days'"
)
DAY_ALL_STREAMS_1D = """
SELECT * FROM stream_stats_1d
WHERE bucket = date_trunc('day', $1::timestamptz, 'UTC') - interval '1 day'
"""
DAY_ONE_STREAM_1M = """
SELECT * FROM stream_stats_1m
WHERE stream_id = '00000000-0000-0000-0000-000000000007'
  AND bucket >= $1::timestamptz - interval '1 day' AND bucket < $1::timestamptz
"""
# As in sql/migrations/0002_rollups_and_jobs.sql.
DROP_TRIGGER = "DROP TRIGGER IF EXISTS stream_stats_invalidate ON stream_stats"
CREATE_TRIGGER = (
    DROP_TRIGGER
    + """;
CREATE TRIGGER stream_stats_invalidate
    BEFORE INSERT OR UPDATE OR DELETE ON stream_stats
    FOR EACH ROW EXECUTE FUNCTION stream_stats_invalidate()
"""
)


def with_database(url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


async def fresh_database(server: str) -> str:
    admin = await asyncpg.connect(with_database(server, "postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await admin.close()
    url = with_database(server, DATABASE)
    await migrations.migrate(url)
    return url


async def refresh(conn: asyncpg.Connection, now: datetime) -> tuple[float, rollups.Refreshed]:
    """What the rollups job does (jobs/rollups.py `run`): the refresh, then the log's vacuum."""
    began = time.perf_counter()
    async with conn.transaction():
        done = await rollups.refresh(conn, now)
    await conn.execute(queries["rollups_vacuum"])
    return time.perf_counter() - began, done


async def timed(conn: asyncpg.Connection, sql: str, *args: object, runs: int) -> tuple[float, int]:
    """Median seconds of `runs` executions (after one warm-up) and the row count."""
    rows = len(await conn.fetch(sql, *args))
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        await conn.fetch(sql, *args)
        times.append(time.perf_counter() - began)
    return statistics.median(times), rows


EXPLAIN = "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) "


async def explain(conn: asyncpg.Connection, label: str, sql: str, *args: object) -> None:
    """Print the executed plan, so a filter that stops reaching an index shows."""
    plan = await conn.fetch(EXPLAIN + sql, *args)
    print(f"  plan of {label}:")
    for row in plan:
        print("    " + row[0])


async def one_size(
    server: str, size: int, streams: int, runs: int, plans: bool = False
) -> dict[str, float]:
    url = await fresh_database(server)
    conn = await asyncpg.connect(url)
    try:
        # The history ends 10 minutes into an hour, so the new minutes never complete an hour:
        # every refresh measured below has the same work (one minute per stream).
        end = datetime.now(UTC).replace(minute=10, second=0, microsecond=0) - timedelta(hours=2)
        minutes = size // streams
        began = time.perf_counter()
        await conn.execute(HISTORY, end, streams, minutes)
        load = time.perf_counter() - began
        await conn.execute("ANALYZE")
        full, done = await refresh(conn, end + timedelta(minutes=1))
        print(
            f"  {size:>10,} rows: loaded in {load:.1f} s ({size / load:,.0f} rows/s with the "
            f"trigger), full refresh {full:.1f} s ({done.minutes:,} minutes, {done.hours:,} hours, "
            f"{done.days:,} days)"
        )
        incremental = []
        for n in range(runs):
            minute = end + timedelta(minutes=n)
            await conn.execute(NEW_MINUTE, minute, streams)
            seconds, done = await refresh(conn, minute + timedelta(minutes=1))
            assert done.minutes == streams, done
            incremental.append(seconds)
        result = {"refresh": statistics.median(incremental), "full": full}
        print(
            f"  refresh after one new minute of {streams:,} streams: median "
            f"{result['refresh'] * 1000:.0f} ms of {runs} "
            f"({', '.join(f'{s * 1000:.0f}' for s in incremental)})"
        )
        for label, sql in (
            ("7-day stream_stats_1h, one stream", WEEK_ONE_STREAM),
            ("7-day stream_stats_1h, all streams", WEEK_ALL_STREAMS),
            ("1-day stream_stats_1m, one stream", DAY_ONE_STREAM_1M),
            ("yesterday's stream_stats_1d, all streams", DAY_ALL_STREAMS_1D),
        ):
            seconds, rows = await timed(conn, sql, end, runs=runs)
            result[label] = seconds
            print(f"  {label}: median {seconds * 1000:.1f} ms ({rows:,} rows)")
        if plans:
            for label, sql in (
                ("7-day stream_stats_1h, one stream", WEEK_ONE_STREAM),
                ("1-day stream_stats_1m, one stream", DAY_ONE_STREAM_1M),
            ):
                await explain(conn, label, sql, end)
        return result
    finally:
        await conn.close()


async def trigger_cost(server: str, batches: int, batch: int, runs: int) -> None:
    """The writer's batch statement, rows/s with the invalidation trigger enabled and disabled."""
    url = await fresh_database(server)
    conn = await asyncpg.connect(url)
    try:
        rates: dict[str, list[float]] = {"on": [], "off": []}
        for n in range(runs):
            for state in ("on", "off"):
                # Hypertables refuse ALTER TABLE … DISABLE TRIGGER: drop and re-create it.
                await conn.execute(DROP_TRIGGER if state == "off" else CREATE_TRIGGER)
                ids = [uuid.uuid4() for _ in range(batch)]
                start = datetime.now(UTC) - timedelta(hours=1, minutes=n)
                began = time.perf_counter()
                for b in range(batches):
                    t = start + timedelta(milliseconds=b)
                    columns = [
                        [t] * batch,
                        ids,
                        [2500.0] * batch,
                        [30.0] * batch,
                        [1920] * batch,
                        [1080] * batch,
                        [-12.0] * batch,
                        [0.2] * batch,
                        [45.0] * batch,
                        [3000.0] * batch,
                        [120.0] * batch,
                        ["good"] * batch,
                    ]
                    async with conn.transaction():
                        await conn.fetch(queries["write_batch"], *columns)
                rates[state].append(batch * batches / (time.perf_counter() - began))
        on, off = statistics.median(rates["on"]), statistics.median(rates["off"])
        print(
            f"  writer batches of {batch} rows ({batches} per run, {runs} runs): "
            f"{on:,.0f} rows/s with the trigger, {off:,.0f} without ({on / off:.2f}×)"
        )
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="postgresql:///streamstats")
    parser.add_argument("--sizes", type=int, nargs="*", default=[1_000_000, 10_000_000])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-trigger", action="store_true")
    parser.add_argument("--explain", action="store_true", help="plans at the largest size")
    args = parser.parse_args()
    results = {}
    for size in args.sizes:
        print(f"{size:,} raw rows, {args.streams:,} streams:")
        plans = args.explain and size == args.sizes[-1]
        results[size] = await one_size(args.server, size, args.streams, args.runs, plans)
    if len(args.sizes) > 1:
        small, large = results[args.sizes[0]], results[args.sizes[-1]]
        print(
            f"refresh after one new minute, {args.sizes[-1]:,} vs {args.sizes[0]:,} rows: "
            f"{large['refresh'] / small['refresh']:.2f}×"
        )
    if not args.skip_trigger:
        print("invalidation trigger:")
        await trigger_cost(args.server, batches=100, batch=1000, runs=args.runs)


if __name__ == "__main__":
    asyncio.run(main())
