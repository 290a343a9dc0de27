"""Which batch insert is faster: `INSERT … SELECT FROM unnest(…)` or COPY into a staging table?

Both run the same transaction shape as the writer (idempotent insert into `stream_stats`,
`stream_latest` moved forward, inserted keys returned), on a dedicated benchmark database.

    .venv/bin/python bench/bench_writer_sql.py --database postgresql:///streamstats_bench_ingest \
        --batch 100 500 1000 --batches 200 --runs 3

With `--crowded`, the project's own `BatchWriter` instead, under an event loop kept busy by
handler-like tasks (each burns `--busy-ms` of CPU per turn): rows are submitted at `--rate`
per second and each row's latency is taken when its future's callback runs in that loop (as a
handler would see it). Variants: the writer on the crowded loop, and the writer on its own
event loop in a thread (rows handed over and answers handed back thread-safely). Before that,
the round trips per flush are counted on a quiet loop through a relay that counts the
server's ReadyForQuery messages (one per round trip).

    .venv/bin/python bench/bench_writer_sql.py --database postgresql:///streamstats_bench_ingest \
        --crowded --rate 2000 --seconds 10 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg

from ingest import metrics
from ingest.rows import COLUMNS, StatsRow
from ingest.writer import BatchWriter
from streamstats import migrations
from streamstats.db import create_pool
from streamstats.settings import Settings
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


class RoundTripCounter:
    """A TCP relay to PostgreSQL, in its own thread, counting ReadyForQuery ('Z') messages."""

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self.ready = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)

    def url(self, database_url: str) -> str:
        parts = urllib.parse.urlsplit(database_url)
        netloc = f"127.0.0.1:{self.port}"
        return urllib.parse.urlunsplit(("postgresql", netloc, parts.path, "sslmode=disable", ""))

    async def _listen(self) -> None:
        server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter):
        server_r, server_w = await asyncio.open_connection(*self.target)
        upstream = asyncio.ensure_future(self._pump(client_r, server_w, None))
        await self._pump(server_r, client_w, bytearray())
        upstream.cancel()

    async def _pump(self, reader, writer, parse: bytearray | None) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                if parse is not None:
                    # Server messages: a type byte, then a 4-byte length that counts itself.
                    parse += data
                    while len(parse) >= 5 and len(parse) >= 1 + int.from_bytes(parse[1:5]):
                        self.ready += parse[0] == ord("Z")
                        del parse[: 1 + int.from_bytes(parse[1:5])]
        writer.close()


def crowd(loop_turn_tasks: int, busy_ms: float, running: Callable[[], bool]) -> list[asyncio.Task]:
    """Tasks that each burn busy_ms of CPU per loop turn, like handlers of a busy server."""

    async def busy() -> None:
        while running():
            end = time.perf_counter() + busy_ms / 1000
            while time.perf_counter() < end:
                pass
            await asyncio.sleep(0)

    return [asyncio.ensure_future(busy()) for _ in range(loop_turn_tasks)]


def flush_totals() -> tuple[float, float]:
    """(seconds, flushes) recorded by the writer so far (`streamstats_flush_seconds`)."""
    total = count = 0.0
    for metric in metrics.FLUSH_SECONDS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_sum"):
                total = sample.value
            elif sample.name.endswith("_count"):
                count = sample.value
    return total, count


async def count_round_trips(url: str, batches: int, batch: int) -> float:
    """Round trips per flush of the project's writer, on a quiet loop."""
    parts = urllib.parse.urlsplit(url)
    counter = RoundTripCounter(parts.hostname or "127.0.0.1", parts.port or 5432)
    settings = Settings(database_url=counter.url(url), batch_ms=10_000, batch_rows=batch)
    pool = await create_pool(settings.database_url, min_size=1, max_size=1)
    writer = BatchWriter(settings, pool)
    await writer.start()
    ids = [uuid.uuid4() for _ in range(batch)]
    start = datetime.now(UTC) - timedelta(hours=2)
    # A warm-up batch: connecting (and preparing) are not flushes.
    await asyncio.gather(*(writer.submit(r) for r in make_rows(batch, ids, start)))
    before = counter.ready
    for n in range(batches):
        rows = make_rows(batch, ids, start + timedelta(seconds=(n + 1) * batch))
        await asyncio.gather(*(writer.submit(r) for r in rows))
    trips = (counter.ready - before) / batches
    await writer.close()
    await pool.close()
    return trips


async def crowded_run(
    url: str, own_loop: bool, rate: int, seconds: float, tasks: int, busy_ms: float
) -> dict[str, float]:
    """Ack latency and flush time of the writer at `rate` rows/s under a crowded loop."""
    settings = Settings(database_url=url)
    main = asyncio.get_running_loop()
    if own_loop:
        writer_loop = asyncio.new_event_loop()
        thread = threading.Thread(target=writer_loop.run_forever, daemon=True)
        thread.start()
    else:
        writer_loop = main

    def on_writer_loop(coro):
        if own_loop:
            return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, writer_loop))
        return asyncio.ensure_future(coro)

    async def open_writer() -> tuple[asyncpg.Pool, BatchWriter]:
        pool = await create_pool(url, min_size=1, max_size=2)
        writer = BatchWriter(settings, pool)
        await writer.start()
        return pool, writer

    pool, writer = await on_writer_loop(open_writer())
    latencies: list[float] = []
    failures = 0
    sent = 0
    sending = True
    all_answered = asyncio.Event()

    def answered(submitted: float, future: asyncio.Future[bool]) -> None:
        nonlocal failures
        if future.exception() is not None:
            failures += 1
        latencies.append(time.perf_counter() - submitted)
        if not sending and len(latencies) >= sent:
            all_answered.set()

    def submit(row: StatsRow, submitted: float) -> None:
        # Runs on the writer's loop; the answer is handed back to the crowded loop.
        future = writer.submit(row)
        if own_loop:
            future.add_done_callback(lambda f: main.call_soon_threadsafe(answered, submitted, f))
        else:
            future.add_done_callback(lambda f: answered(submitted, f))

    stop = False
    busy = crowd(tasks, busy_ms, lambda: not stop)
    ids = [uuid.uuid4() for _ in range(1000)]
    start = datetime.now(UTC) - timedelta(hours=1)
    sum_before, count_before = flush_totals()
    began = time.perf_counter()
    while (elapsed := time.perf_counter() - began) < seconds:
        due = int(elapsed * rate)
        for i in range(sent, due):
            row = make_rows(1, [ids[i % len(ids)]], start + timedelta(milliseconds=i))[0]
            now = time.perf_counter()
            if own_loop:
                writer_loop.call_soon_threadsafe(submit, row, now)
            else:
                submit(row, now)
        sent = max(sent, due)
        await asyncio.sleep(0.005)
    sending = False
    if len(latencies) < sent:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_answered.wait(), 30)
    stop = True
    await asyncio.gather(*busy)
    sum_after, count_after = flush_totals()
    await on_writer_loop(writer.close())
    await on_writer_loop(pool.close())
    if own_loop:
        writer_loop.call_soon_threadsafe(writer_loop.stop)
        thread.join(5)
    flushes = count_after - count_before
    ordered = sorted(latencies)
    return {
        "rows": float(sent),
        "answered": float(len(latencies)),
        "failed": float(failures),
        "flushes": flushes,
        "flush_ms": 1000 * (sum_after - sum_before) / max(flushes, 1),
        "p50_ms": 1000 * ordered[len(ordered) // 2],
        "p99_ms": 1000 * ordered[int(len(ordered) * 0.99)],
    }


async def crowded(args: argparse.Namespace) -> None:
    await migrations.migrate(args.database)
    trips = await count_round_trips(args.database, batches=50, batch=500)
    print(f"round trips per flush (500-row batches, quiet loop): {trips:.2f}")
    print(
        f"crowded loop: {args.tasks} tasks × {args.busy_ms} ms per turn, {args.rate} rows/s "
        f"for {args.seconds:.0f} s, {args.runs} runs (medians)"
    )
    print(f"{'writer':>10} {'flush ms':>9} {'ack p50 ms':>11} {'ack p99 ms':>11} {'failed':>7}")
    results: dict[str, list[dict[str, float]]] = {"same loop": [], "own loop": []}
    for _ in range(args.runs):
        for name in results:
            run = await crowded_run(
                args.database,
                name == "own loop",
                args.rate,
                args.seconds,
                args.tasks,
                args.busy_ms,
            )
            results[name].append(run)
            print(
                f"{'  ' + name:>10} {run['flush_ms']:>9.1f} {run['p50_ms']:>11.1f} "
                f"{run['p99_ms']:>11.1f} {run['failed']:>7.0f}  ({run['answered']:.0f} of "
                f"{run['rows']:.0f} answered, {run['flushes']:.0f} flushes)"
            )
    for name, runs in results.items():
        median = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        print(
            f"median {name}: flush {median['flush_ms']:.1f} ms, ack p50 {median['p50_ms']:.1f} "
            f"ms, p99 {median['p99_ms']:.1f} ms, failed {median['failed']:.0f}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default="postgresql:///streamstats_bench_ingest")
    parser.add_argument("--batch", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--crowded", action="store_true", help="the writer under a busy loop")
    parser.add_argument("--rate", type=int, default=2000, help="rows/s offered (--crowded)")
    parser.add_argument("--seconds", type=float, default=10, help="per run (--crowded)")
    parser.add_argument("--tasks", type=int, default=100, help="busy tasks (--crowded)")
    parser.add_argument("--busy-ms", type=float, default=0.5, help="CPU per task and turn")
    args = parser.parse_args()
    if args.crowded:
        await crowded(args)
        return

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
