"""Daily report for N streams × one full day read from the rollups: wall time, memory, size.

    DATABASE_URL=postgresql:///streamstats .venv/bin/python bench/bench_reports.py \
        --streams 1000 --small 100 --old 032d27e --runs 3

Creates two databases on that server (dropped afterwards), fills `rollup_1m`/`rollup_1d` of
each with a synthetic day (1,440 minutes per stream, some bitrate drops and alerts) for
`--streams` and for `--small` streams, then runs `jobs.reports.write_day` on both, interleaved,
`--runs` times. With `--old REF`, the same job of that commit (checked out into a temporary
git worktree, run on the current schema) is measured on the small database in the same runs:
the baseline. Each run is a new process: its peak memory is its maximum RSS (ru_maxrss, or that of
the largest worker process the old code starts), so runs do not inherit each other's. The load
average is printed with every run, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamstats import migrations
from streamstats.db import connect
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


# One run in a fresh interpreter that imports only the tree it is given (argv[1]), so the
# old commit's code runs with its own modules and SQL.
CHILD = """
import asyncio, inspect, json, os, resource, statistics, sys, time
from datetime import date
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from jobs.reports import write_day
from streamstats.db import create_pool
from streamstats.settings import Settings

async def run(url, reports_dir):
    settings = Settings(database_url=url, reports_dir=Path(reports_dir))
    pool = await create_pool(url, max_size=2)
    try:
        extra = {}
        if "workers" in inspect.signature(write_day).parameters:
            extra["workers"] = os.cpu_count() or 1
        return await write_day(settings, pool, date.fromisoformat(sys.argv[4]), **extra)
    finally:
        await pool.close()

started = time.perf_counter()
count = asyncio.run(run(sys.argv[2], sys.argv[3]))
elapsed = time.perf_counter() - started
rss = max(resource.getrusage(who).ru_maxrss for who in
          (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024
folder = Path(sys.argv[3]) / sys.argv[4]
pages = [p.stat().st_size for p in folder.glob("*.html") if p.name != "index.html"]
print(json.dumps([count, elapsed, rss, statistics.median(pages),
                  (folder / "index.html").stat().st_size]))
"""


def measure(url: str, tree: str) -> tuple[Any, ...]:
    """(streams, seconds, peak RSS MiB, median page bytes, index bytes, load average) of one
    run of `tree`'s report job in a new process."""
    with tempfile.TemporaryDirectory() as reports_dir:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, tree, url, reports_dir, DAY.isoformat()],
            cwd=reports_dir,
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        sys.exit(f"the report run failed:\n{done.stderr}")
    return (*json.loads(done.stdout.splitlines()[-1]), os.getloadavg()[0])


def checkout(ref: str, where: Path) -> str:
    root = Path(__file__).resolve().parent.parent
    subprocess.run(
        ["git", "-C", str(root), "worktree", "add", "--detach", str(where), ref],
        check=True,
        capture_output=True,
    )
    return str(where)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--small", type=int, default=100, help="the smaller database's streams")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--old", metavar="REF", help="also measure this commit's report job")
    args = parser.parse_args()
    server = os.environ.get("DATABASE_URL", "postgresql:///streamstats")
    urls = {}
    old_tree = Path(tempfile.mkdtemp(prefix="bench-reports-old-")) / "tree"
    try:
        for size in (args.small, args.streams):
            urls[size] = dbutil.create_database(server, "streamstats_bench_reports")
            asyncio.run(migrations.migrate(urls[size]))
            t = time.perf_counter()
            asyncio.run(seed(urls[size], size))
            print(f"seeded {size} streams × 1,440 minutes in {time.perf_counter() - t:.1f}s")
        old = checkout(args.old, old_tree) if args.old else None
        new = str(Path(__file__).resolve().parent.parent)
        results: dict[str, list[tuple[Any, ...]]] = {}
        for run in range(args.runs):
            plan = [(f"new {args.small}", urls[args.small], new)]
            plan.append((f"new {args.streams}", urls[args.streams], new))
            if old is not None:
                plan.append((f"old {args.small}", urls[args.small], old))
            for name, url, tree in plan:
                r = measure(url, tree)
                results.setdefault(name, []).append(r)
                print(
                    f"run {run + 1} {name:>9}: {r[0]} streams in {r[1]:.1f}s "
                    f"({1000 * r[1] / r[0]:.1f} ms/stream), peak RSS {r[2]:.0f} MiB, "
                    f"page {r[3] / 1024:.0f} KiB, index {r[4] / 1024:.0f} KiB, load {r[5]:.1f}",
                    flush=True,
                )
        print(f"medians of {args.runs}:")
        for name, rs in results.items():
            seconds = statistics.median(r[1] for r in rs)
            print(
                f"  {name:>9}: {seconds:.1f}s ({1000 * seconds / rs[0][0]:.1f} ms/stream), "
                f"peak RSS {statistics.median(r[2] for r in rs):.0f} MiB, "
                f"page {statistics.median(r[3] for r in rs) / 1024:.0f} KiB, "
                f"load {statistics.median(r[5] for r in rs):.1f}"
            )
        if old is not None:
            new_small = statistics.median(r[1] for r in results[f"new {args.small}"])
            old_small = statistics.median(r[1] for r in results[f"old {args.small}"])
            print(f"  old / new at {args.small} streams: {old_small / new_small:.1f}×")
    finally:
        for url in urls.values():
            dbutil.drop_database(url)
        if old_tree.exists():
            root = Path(__file__).resolve().parent.parent
            subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(old_tree)])
        shutil.rmtree(old_tree.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
