"""Which batch insert is faster: `INSERT … SELECT FROM unnest(…)` or COPY into a staging table?

Both run the same transaction shape as the writer (idempotent insert into `stream_stats`,
`stream_latest` moved forward, inserted keys returned), on a dedicated benchmark database.

    .venv/bin/python bench/bench_writer_sql.py --database postgresql:///streamstats_bench_ingest \
        --batch 100 500 1000 --batches 200 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from ingest.rows import COLUMNS, StatsRow
from streamstats import migrations
from streamstats.sql import queries

STAGING = """
CREATE TEMP TABLE IF NOT EXISTS writer_staging (LIKE stream_stats INCLUDING DEFAULTS)
ON COMMIT DELETE ROWS
"""
# The writer's statement with the unnest input replaced by the staging table.
FROM_STAGING = queries["write_batch"].split("inserted AS (", 1)[1]
FROM_STAGING = (
    "WITH input AS (SELECT "
    + ", ".join(COLUMNS)
    + " FROM writer_staging), inserted AS ("
    + FROM_STAGING
)


def make_rows(count: int, streams: list[uuid.UUID], start: datetime) -> list[StatsRow]:
    return [
        StatsRow(
            start + timedelta(milliseconds=i),
            streams[i % len(streams)],
            2500.0 + i % 7,
            30.0,
            1920,
            1080,
            -12.0,
            0.2,
            45.0,
            3000.0,
            120.0,
            "good",
        )
        for i in range(count)
    ]


async def unnest_batch(conn: asyncpg.Connection, rows: list[StatsRow]) -> int:
    columns = [list(c) for c in zip(*rows, strict=True)]
    async with conn.transaction():
        return len(await conn.fetch(queries["write_batch"], *columns))


async def copy_batch(conn: asyncpg.Connection, rows: list[StatsRow]) -> int:
    async with conn.transaction():
        await conn.execute(STAGING)
        await conn.copy_records_to_table("writer_staging", records=rows, columns=list(COLUMNS))
        return len(await conn.fetch(FROM_STAGING))


async def measure(conn, method, batch: int, batches: int, streams: int) -> float:
    """Rows per second for `batches` batches of `batch` fresh rows (fresh streams, recent times)."""
    ids = [uuid.uuid4() for _ in range(streams)]
    start = datetime.now(UTC) - timedelta(hours=1)
    work = [make_rows(batch, ids, start + timedelta(seconds=n * batch)) for n in range(batches)]
    began = time.perf_counter()
    for rows in work:
        assert await method(conn, rows) == batch
    return batch * batches / (time.perf_counter() - began)


async def unnest_no_trigger(conn: asyncpg.Connection, rows: list[StatsRow]) -> int:
    """The writer's statement with row-level user triggers on stream_stats switched off."""
    columns = [list(c) for c in zip(*rows, strict=True)]
    async with conn.transaction():
        # Bench database only: measures what per-row triggers (rollup invalidation) cost.
        await conn.execute(NO_TRIGGERS)
        try:
            return len(await conn.fetch(queries["write_batch"], *columns))
        finally:
            await conn.execute(TRIGGERS)


NO_TRIGGERS = "SET LOCAL session_replication_role = replica"
TRIGGERS = "SET LOCAL session_replication_role = origin"
METHODS = {"unnest": unnest_batch, "copy": copy_batch, "unnest_no_trigger": unnest_no_trigger}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default="postgresql:///streamstats_bench_ingest")
    parser.add_argument("--batch", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--streams", type=int, default=1000)
    args = parser.parse_args()

    await migrations.migrate(args.database)
    conn = await asyncpg.connect(args.database)
    await conn.execute("TRUNCATE stream_stats, stream_latest")
    if await conn.fetchval("SELECT to_regclass('rollup_invalidations') IS NOT NULL"):
        await conn.execute("TRUNCATE rollup_invalidations")
    triggers = await conn.fetchval(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'stream_stats'::regclass "
        "AND NOT tgisinternal AND tgname <> 'ts_insert_blocker'"
    )
    print(f"user row triggers on stream_stats: {triggers}")
    try:
        print(
            f"{'batch':>6} {'unnest rows/s':>14} {'copy rows/s':>12} {'unnest/copy':>12} "
            f"{'unnest, no triggers':>20}"
        )
        for batch in args.batch:
            results: dict[str, list[float]] = {name: [] for name in METHODS}
            for _ in range(args.runs):
                # Alternate so drift on a shared machine hits all alike.
                for name, method in METHODS.items():
                    rate = await measure(conn, method, batch, args.batches, args.streams)
                    results[name].append(rate)
            u, c, n = (statistics.median(results[name]) for name in METHODS)
            print(f"{batch:>6} {u:>14,.0f} {c:>12,.0f} {u / c:>12.2f} {n:>20,.0f}")
    finally:
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
