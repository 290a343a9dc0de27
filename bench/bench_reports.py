"""Daily report for N streams × one full day read from the rollups: wall time and peak memory.

    DATABASE_URL=postgresql:///streamstats .venv/bin/python bench/bench_reports.py --streams 1000

Creates its own database on that server (dropped afterwards), fills `rollup_1m`/`rollup_1d`
with a synthetic day (1,440 minutes per stream, some bitrate drops and alerts), then runs
`jobs.reports.write_day`. Baseline in the same run: only reading every stream's 1-minute rows
through `stream_stats_1m` (what the report must read anyway). Peak memory is the process's
maximum RSS (ru_maxrss) measured in a child process per run, so runs do not inherit each other's.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamstats import migrations
from streamstats.db import connect, create_pool
from streamstats.settings import Settings
from tests import dbutil

DAY = date(2026, 3, 2)
START = datetime(2026, 3, 2, tzinfo=UTC)

SEED_MINUTES = """
INSERT INTO rollup_1m
SELECT m, s, 12,
       b, b * 0.8, b * 1.2, b, b * 1.1,
       f, f - 3, l, l * 2, 60 + 40 * l, 90 + 60 * l, 120 + 80 * l,
       CASE WHEN l < 1 THEN 12 ELSE 6 END, CASE WHEN l < 1 THEN 0 ELSE 4 END,
       CASE WHEN l < 1 THEN 0 ELSE 2 END
FROM (
    SELECT s, m,
           2500 + 500 * sin(extract(epoch FROM m) / 900 + i) * (CASE WHEN i % 7 = 0
               AND extract(hour FROM m) = 14 THEN 0.3 ELSE 1 END) AS b,
           28 + 2 * cos(extract(epoch FROM m) / 600 + i) AS f,
           greatest(0, 0.5 + 1.5 * sin(extract(epoch FROM m) / 3000 + i)) AS l
    FROM (SELECT i, ('00000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid AS s
          FROM generate_series(1, $1) AS i) streams,
         generate_series($2::timestamptz, $2::timestamptz + interval '1 day' - interval '1 minute',
                         interval '1 minute') AS m
) x
"""

SEED_DAYS = """
INSERT INTO rollup_1d
SELECT $1::timestamptz, stream_id, sum(samples), avg(bitrate_kbps_avg), min(bitrate_kbps_min),
       max(bitrate_kbps_max), percentile_cont(0.5) WITHIN GROUP (ORDER BY bitrate_kbps_p50),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY bitrate_kbps_p95), avg(fps_avg), min(fps_min),
       avg(packet_loss_pct_avg), max(packet_loss_pct_max), avg(latency_ms_avg),
       max(latency_ms_p95), max(latency_ms_max), sum(good_samples), sum(fair_samples),
       sum(poor_samples)
FROM rollup_1m GROUP BY stream_id
"""

SEED_EPISODES = """
INSERT INTO bitrate_drops (stream_id, started_at, ended_at, baseline_kbps, observed_kbps, drop_pct)
SELECT stream_id, $1::timestamptz + interval '14 hours', $1::timestamptz + interval '15 hours',
       2500, 750, 70
FROM rollup_1d WHERE get_byte(uuid_send(stream_id), 15) % 7 = 0
"""


async def seed(url: str, streams: int) -> None:
    conn = await connect(url)
    try:
        await conn.execute(SEED_MINUTES, streams, START)
        await conn.execute(SEED_DAYS, START)
        await conn.execute(SEED_EPISODES, START)
        await conn.execute(
            "INSERT INTO stream_alerts (stream_id, type, value, threshold, raised_at, cleared_at) "
            "SELECT stream_id, 'packet_loss_high', 7, 5, started_at, ended_at FROM bitrate_drops"
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def read_only(url: str) -> int:
    from analytics.report import day_bounds
    from streamstats.sql import queries

    start, end = day_bounds(DAY)
    pool = await create_pool(url, max_size=2)
    rows = 0
    try:
        async with pool.acquire() as conn:
            for day_row in await conn.fetch(queries["report_days"], start, None):
                minutes = await conn.fetch(
                    queries["report_minutes"], day_row["stream_id"], start, end
                )
                rows += len(minutes)
    finally:
        await pool.close()
    return rows


async def full_report(url: str, reports_dir: str, workers: int) -> int:
    from jobs.reports import write_day

    settings = Settings(database_url=url, reports_dir=Path(reports_dir))
    pool = await create_pool(url, max_size=2)
    try:
        return await write_day(settings, pool, DAY, workers=workers)
    finally:
        await pool.close()


def _child(kind: str, url: str, reports_dir: str, workers: int, out: Any) -> None:
    started = time.perf_counter()
    if kind == "report":
        count = asyncio.run(full_report(url, reports_dir, workers))
    else:
        count = asyncio.run(read_only(url))
    elapsed = time.perf_counter() - started
    main = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # The largest render worker, if any (they are separate processes).
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    out.put((count, elapsed, main, worker))


def measure(kind: str, url: str, reports_dir: str, workers: int = 1) -> tuple[Any, ...]:
    """(items, seconds, peak RSS MiB, largest worker's peak RSS MiB) of a run in a new process."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(kind, url, reports_dir, workers, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    server = os.environ.get("DATABASE_URL", "postgresql:///streamstats")
    url = dbutil.create_database(server, "streamstats_bench_reports")
    try:
        asyncio.run(migrations.migrate(url))
        t = time.perf_counter()
        asyncio.run(seed(url, args.streams))
        print(f"seeded {args.streams} streams × 1,440 minutes in {time.perf_counter() - t:.1f}s")
        with tempfile.TemporaryDirectory() as reports_dir:
            base, full = [], []
            for run in range(args.runs):
                base.append(measure("read", url, reports_dir))
                full.append(measure("report", url, reports_dir, args.workers))
                print(
                    f"run {run + 1}: read-only {base[-1][1]:.1f}s ({base[-1][2]:.0f} MiB), "
                    f"report {full[-1][1]:.1f}s ({full[-1][2]:.0f} MiB + workers "
                    f"{full[-1][3]:.0f} MiB each), {full[-1][0]} streams, {args.workers} workers"
                )
            size = sum(p.stat().st_size for p in Path(reports_dir).rglob("*") if p.is_file())
        b = statistics.median(r[1] for r in base)
        f = statistics.median(r[1] for r in full)
        print(
            f"median of {args.runs}: baseline (read 1m rollups only) {b:.1f}s, "
            f"peak {statistics.median(r[2] for r in base):.0f} MiB; full report {f:.1f}s "
            f"({1000 * f / args.streams:.0f} ms/stream, {f / b:.1f}× the baseline), "
            f"peak {statistics.median(r[2] for r in full):.0f} MiB + "
            f"{statistics.median(r[3] for r in full):.0f} MiB per worker; "
            f"files {size / 2**20:.0f} MiB"
        )
    finally:
        dbutil.drop_database(url)


if __name__ == "__main__":
    main()
