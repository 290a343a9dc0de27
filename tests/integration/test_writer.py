"""The batch writer against a real TimescaleDB: batching, idempotency, backpressure, outages."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from ingest.errors import Invalid, Overloaded, Unavailable
from ingest.rows import Committed, StatsRow
from ingest.writer import BatchWriter
from streamstats.db import create_pool
from tests.proxy import TcpProxy

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def row(stream: uuid.UUID, second: float, bitrate: float = 2500.0) -> StatsRow:
    return StatsRow(
        time=T0 + timedelta(seconds=second),
        stream_id=stream,
        bitrate_kbps=bitrate,
        fps=30.0,
        width=1280,
        height=720,
        audio_level_db=-12.5,
        packet_loss_pct=0.1,
        latency_ms=40.0,
        upload_kbps=3000.0,
        download_kbps=100.0,
        quality="good",
    )


@asynccontextmanager
async def running_writer(
    settings: Any, on_commit: Callable[[list[Committed]], None] | None = None
) -> AsyncIterator[BatchWriter]:
    pool = await create_pool(settings.database_url, min_size=1, max_size=2)
    writer = BatchWriter(settings, pool, on_commit=on_commit)
    await writer.start()
    try:
        yield writer
    finally:
        await writer.close()
        await pool.close()


async def stored(conn: asyncpg.Connection, stream: uuid.UUID) -> list[float]:
    """Seconds after T0 of the rows stored for a stream, in order."""
    rows = await conn.fetch(
        "SELECT extract(epoch FROM time - $2) AS s FROM stream_stats WHERE stream_id = $1 "
        "ORDER BY time",
        stream,
        T0,
    )
    return [float(r["s"]) for r in rows]


async def wait_until(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)


async def test_each_row_is_stored_once_and_a_resend_is_a_duplicate(make_settings, conn):
    stream = uuid.uuid4()
    async with running_writer(make_settings(batch_rows=100)) as writer:
        first = await asyncio.gather(*(writer.submit(row(stream, i)) for i in range(250)))
        again = await asyncio.gather(*(writer.submit(row(stream, i)) for i in range(0, 250, 10)))
    assert first == [False] * 250
    assert again == [True] * 25
    assert await stored(conn, stream) == [float(i) for i in range(250)]
    received = await conn.fetchval(
        "SELECT count(*) FROM stream_stats "
        "WHERE stream_id = $1 AND received_at > now() - interval '1 min'",
        stream,
    )
    assert received == 250


async def test_a_row_repeated_within_one_batch_is_stored_once(make_settings, conn):
    stream = uuid.uuid4()
    async with running_writer(make_settings(batch_ms=200)) as writer:
        results = await asyncio.gather(
            writer.submit(row(stream, 1)),
            writer.submit(row(stream, 1)),
            writer.submit(row(stream, 2)),
        )
    assert results == [False, True, False]
    assert await stored(conn, stream) == [1.0, 2.0]


async def test_latest_row_follows_time_and_never_moves_backwards(make_settings, conn):
    stream, other = uuid.uuid4(), uuid.uuid4()
    async with running_writer(make_settings()) as writer:
        await asyncio.gather(
            writer.submit(row(stream, 10, bitrate=1000)),
            writer.submit(row(stream, 30, bitrate=3000)),
            writer.submit(row(stream, 20, bitrate=2000)),
            writer.submit(row(other, 5, bitrate=500)),
        )
        # A late sample in a later batch must not replace the newer one.
        await writer.submit(row(stream, 25, bitrate=2500))
        # A resent duplicate of the latest with other values does not rewrite it either.
        await writer.submit(row(stream, 30, bitrate=9999))
    latest = {
        r["stream_id"]: (r["time"], r["bitrate_kbps"])
        for r in await conn.fetch("SELECT stream_id, time, bitrate_kbps FROM stream_latest")
    }
    assert latest[stream] == (T0 + timedelta(seconds=30), 3000.0)
    assert latest[other] == (T0 + timedelta(seconds=5), 500.0)


async def test_a_full_batch_is_flushed_before_batch_ms(make_settings):
    stream = uuid.uuid4()
    async with running_writer(make_settings(batch_ms=60_000, batch_rows=20)) as writer:
        started = time.monotonic()
        await asyncio.wait_for(
            asyncio.gather(*(writer.submit(row(stream, i)) for i in range(20))), 5
        )
        assert time.monotonic() - started < 5
        assert writer.batches == 1


async def test_a_partial_batch_is_flushed_after_batch_ms(make_settings):
    stream = uuid.uuid4()
    async with running_writer(make_settings(batch_ms=300, batch_rows=1000)) as writer:
        started = time.monotonic()
        await asyncio.gather(*(writer.submit(row(stream, i)) for i in range(3)))
        waited = time.monotonic() - started
    assert 0.25 <= waited < 3


async def test_a_full_queue_refuses_at_once_and_stores_nothing_refused(make_settings, conn):
    stream = uuid.uuid4()
    async with running_writer(make_settings(batch_ms=60_000, queue_rows=5)) as writer:
        accepted = [writer.submit(row(stream, i)) for i in range(5)]
        assert writer.depth == 5
        with pytest.raises(Overloaded):
            writer.submit(row(stream, 99))
    # close() flushed what it had accepted.
    assert [f.result() for f in accepted] == [False] * 5
    assert await stored(conn, stream) == [0.0, 1.0, 2.0, 3.0, 4.0]


async def test_close_commits_everything_accepted_then_refuses(make_settings, conn):
    stream = uuid.uuid4()
    async with running_writer(make_settings(batch_ms=60_000, batch_rows=1000)) as writer:
        futures = [writer.submit(row(stream, i)) for i in range(500)]
        await writer.close()
        assert all(f.done() and f.result() is False for f in futures)
        with pytest.raises(Unavailable):
            writer.submit(row(stream, 1000))
    assert len(await stored(conn, stream)) == 500


@pytest.mark.parametrize("outage", ["cut", "hang"])
async def test_an_outage_fails_late_rows_unstored_and_the_writer_recovers(
    outage, make_settings, database_url, conn
):
    stream = uuid.uuid4()
    with TcpProxy.for_database(database_url) as proxy:
        # Long enough that rows submitted late in the outage outlive the writer's reconnection
        # backoff (up to 1 s) once it ends, on a loaded machine too.
        settings = make_settings(database_url=proxy.url(database_url), write_timeout="3s")
        async with running_writer(settings) as writer:
            assert await writer.submit(row(stream, 0)) is False
            assert writer.healthy

            getattr(proxy, outage)()
            lost = [writer.submit(row(stream, i)) for i in range(1, 21)]
            results = await asyncio.gather(*lost, return_exceptions=True)
            assert all(isinstance(r, Unavailable) for r in results), results
            assert not writer.healthy
            assert writer.depth == 0

            # Rows submitted during the outage but within their deadline are stored afterwards.
            pending = [writer.submit(row(stream, i)) for i in range(21, 31)]
            await asyncio.sleep(0.3)
            proxy.forward()
            assert await asyncio.gather(*pending) == [False] * 10
            await wait_until(lambda: writer.healthy, 5)
            assert await writer.submit(row(stream, 31)) is False

    # Nothing reported as unavailable was stored, then or later.
    assert await stored(conn, stream) == [0.0, *[float(i) for i in range(21, 32)]]


async def test_health_recovers_without_traffic_after_an_outage(make_settings, database_url):
    stream = uuid.uuid4()
    with TcpProxy.for_database(database_url) as proxy:
        settings = make_settings(database_url=proxy.url(database_url), write_timeout="0.5s")
        async with running_writer(settings) as writer:
            proxy.cut()
            with pytest.raises(Unavailable):
                await writer.submit(row(stream, 0))
            assert not writer.healthy
            proxy.forward()
            await wait_until(lambda: writer.healthy, 5)


async def test_memory_stays_bounded_during_an_outage(make_settings, database_url):
    stream = uuid.uuid4()
    with TcpProxy.for_database(database_url) as proxy:
        settings = make_settings(
            database_url=proxy.url(database_url), queue_rows=50, write_timeout="1s"
        )
        async with running_writer(settings) as writer:
            proxy.hang()
            accepted, refused = [], 0
            for i in range(500):
                try:
                    accepted.append(writer.submit(row(stream, i)))
                except Overloaded:
                    refused += 1
            assert len(accepted) == 50 and refused == 450
            assert writer.depth <= 50
            await asyncio.gather(*accepted, return_exceptions=True)
            proxy.forward()


async def test_a_commit_whose_answer_is_lost_is_retried_and_found_stored(
    make_settings, database_url, conn
):
    stream = uuid.uuid4()
    with TcpProxy.for_database(database_url) as proxy:
        settings = make_settings(database_url=proxy.url(database_url), write_timeout="5s")
        async with running_writer(settings) as writer:
            assert await writer.submit(row(stream, 0)) is False
            # The batch statement carries the stream id (binary) in its parameters.
            proxy.lose_next_answer(stream.bytes, then="forward")
            results = await asyncio.gather(*(writer.submit(row(stream, i)) for i in range(1, 11)))
        assert proxy.answers_lost == 1
    # The lost answer was a commit: the retry finds every row already stored, once.
    assert results == [True] * 10
    assert await stored(conn, stream) == [float(i) for i in range(11)]


async def test_rows_of_a_commit_with_unknown_outcome_fail_saying_they_may_be_stored(
    make_settings, database_url, conn
):
    stream = uuid.uuid4()
    with TcpProxy.for_database(database_url) as proxy:
        settings = make_settings(database_url=proxy.url(database_url), write_timeout="1s")
        async with running_writer(settings) as writer:
            assert await writer.submit(row(stream, 0)) is False
            proxy.lose_next_answer(stream.bytes, then="cut")
            results = await asyncio.gather(
                *(writer.submit(row(stream, i)) for i in range(1, 11)), return_exceptions=True
            )
            proxy.forward()
        assert proxy.answers_lost == 1
    assert all(isinstance(r, Unavailable) for r in results), results
    assert all("may have been stored" in str(r) for r in results), results
    # They were: a client resending them is told `duplicate`, nothing is stored twice.
    assert await stored(conn, stream) == [float(i) for i in range(11)]


async def test_rows_the_database_refuses_fail_invalid_and_the_rest_of_the_batch_is_stored(
    make_settings, conn
):
    stream = uuid.uuid4()
    refused_check = row(stream, 3)._replace(quality="excellent")  # violates the quality CHECK
    refused_range = row(stream, 7)._replace(width=2**31)  # out of int4 range
    rows = [row(stream, i) for i in range(10)]
    rows[3], rows[7] = refused_check, refused_range
    async with running_writer(make_settings(batch_ms=200, write_timeout="3s")) as writer:
        results = await asyncio.gather(*(writer.submit(r) for r in rows), return_exceptions=True)
        assert writer.healthy
        # The writer goes on storing rows afterwards, on the same kind of attempt.
        assert await writer.submit(row(stream, 10)) is False
        assert writer.failures == 0
    assert isinstance(results[3], Invalid) and isinstance(results[7], Invalid), results
    assert "nothing was stored" in str(results[3])
    assert [r for i, r in enumerate(results) if i not in (3, 7)] == [False] * 8
    assert await stored(conn, stream) == [0.0, 1.0, 2.0, 4.0, 5.0, 6.0, 8.0, 9.0, 10.0]


@pytest.mark.parametrize(
    "refusal",
    [
        "search_path=nowhere",  # the tables are not there: an unmigrated database
        "default_transaction_read_only=on",  # a standby after a failover
    ],
)
async def test_a_database_that_refuses_writes_is_retried_with_backoff_and_stores_nothing(
    refusal, make_settings, database_url, conn, caplog
):
    stream = uuid.uuid4()
    caplog.set_level(logging.INFO, logger="ingest.writer")
    settings = make_settings(database_url=f"{database_url}?{refusal}", write_timeout="1.5s")
    async with running_writer(settings) as writer:
        started = time.monotonic()
        results = await asyncio.gather(
            *(writer.submit(row(stream, i)) for i in range(20)), return_exceptions=True
        )
        # Kept and retried until shortly before their deadline, not failed at the first error.
        assert time.monotonic() - started >= 1.0
        assert all(isinstance(r, Unavailable) for r in results), results
        assert all("nothing was stored" in str(r) for r in results), results
        # Backing off 50 ms, 100 ms, ... 1 s: a handful of attempts, not a tight loop.
        assert 1 <= writer.failures <= 8, writer.failures
        assert not writer.healthy
        # Reachable, but still not writable: readiness must not come back by itself.
        await asyncio.sleep(1.5)
        assert not writer.healthy
    records = [r for r in caplog.records if r.name == "ingest.writer"]
    # One line for the episode, one for the expired rows, one on close; no tracebacks.
    assert len(records) <= 4, [r.getMessage() for r in records]
    assert not any(r.exc_info for r in records)
    assert await stored(conn, stream) == []


async def test_writers_inserting_overlapping_rows_in_opposite_orders_do_not_deadlock(
    make_settings, conn
):
    # Two ingest nodes, each sent the same rows (a client resending to another node).
    settings = make_settings(batch_ms=60_000, batch_rows=3000)
    async with running_writer(settings) as a, running_writer(settings) as b:
        for _ in range(3):
            stream = uuid.uuid4()
            keys = list(range(3000))
            results = await asyncio.gather(
                asyncio.gather(*(a.submit(row(stream, i)) for i in keys)),
                asyncio.gather(*(b.submit(row(stream, i)) for i in reversed(keys))),
            )
            from_a, from_b = results[0], results[1][::-1]
            # Each row stored by exactly one of them, the other told `duplicate`.
            assert all(x != y for x, y in zip(from_a, from_b, strict=True))
            assert await stored(conn, stream) == [float(i) for i in keys]
        assert a.failures == 0 and b.failures == 0, (a.failures, b.failures)


async def test_close_cut_short_during_commit_cleans_up_and_says_rows_may_be_stored(
    make_settings, database_url, conn
):
    stream = uuid.uuid4()
    name = f"test_slow_commit_{stream.hex}"
    # A deferred constraint trigger runs at COMMIT: this one holds the COMMIT of this stream.
    await conn.execute(
        f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_sleep(2); RETURN NULL; END $$"
    )
    await conn.execute(
        f"CREATE CONSTRAINT TRIGGER {name} AFTER INSERT OR UPDATE ON stream_latest "
        f"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
        f"WHEN (NEW.stream_id = '{stream}') EXECUTE FUNCTION {name}()"
    )
    try:
        pool = await create_pool(database_url, min_size=1, max_size=2)
        writer = BatchWriter(make_settings(write_timeout="5s"), pool)
        await writer.start()
        futures = [writer.submit(row(stream, i)) for i in range(5)]
        await asyncio.sleep(0.5)  # the batch is flushed, its COMMIT waits on the trigger
        assert not any(f.done() for f in futures)
        started = time.monotonic()
        # A drain cut short cancels close().
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(writer.close(), 0.3)
        assert time.monotonic() - started < 1.5
        # Every row answered: cancelled in COMMIT, so maybe stored (never retried afterwards).
        assert all(f.done() for f in futures)
        errors = [f.exception() for f in futures]
        assert all(isinstance(e, Unavailable) for e in errors), errors
        assert all("may have been stored" in str(e) for e in errors), errors
        # The loop and the expiry task are gone and the connection is back: the pool closes.
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("batch-writer")]
        await writer.close()  # idempotent
        await asyncio.wait_for(pool.close(), 2)
        # The server finished the COMMIT it was given: they were stored, once.
        await asyncio.sleep(2)
        assert await stored(conn, stream) == [0.0, 1.0, 2.0, 3.0, 4.0]
    finally:
        await conn.execute(f"DROP TRIGGER {name} ON stream_latest")
        await conn.execute(f"DROP FUNCTION {name}()")


async def test_on_commit_gets_each_committed_batch_once_in_order_after_its_answers(
    make_settings, conn
):
    stream = uuid.uuid4()
    batches: list[list[Committed]] = []
    futures: dict[float, asyncio.Future[bool]] = {}

    def on_commit(batch: list[Committed]) -> None:
        # Called after the batch's futures are resolved, before anyone awaited them.
        assert all(futures[(r.row.time - T0).total_seconds()].done() for r in batch)
        batches.append(batch)

    async with running_writer(make_settings(batch_rows=10), on_commit) as writer:
        for i in range(25):
            futures[float(i)] = writer.submit(row(stream, i))
        await asyncio.gather(*futures.values())
        resent = writer.submit(row(stream, 3))
        assert await resent is True
    assert [len(b) for b in batches] == [10, 10, 5, 1]
    seconds = [(c.row.time - T0).total_seconds() for b in batches for c in b]
    assert seconds == [float(i) for i in range(25)] + [3.0]
    assert [c.duplicate for b in batches for c in b] == [False] * 25 + [True]


async def test_on_commit_leaves_out_refused_rows_and_its_failure_harms_nothing(
    make_settings, conn, caplog
):
    stream = uuid.uuid4()
    rows = [row(stream, i) for i in range(6)]
    rows[2] = rows[2]._replace(quality="excellent")  # violates the quality CHECK
    rows.append(rows[4])  # repeated within the batch: a duplicate of the first
    committed: list[Committed] = []

    def on_commit(batch: list[Committed]) -> None:
        committed.extend(batch)
        raise RuntimeError("a broken hook")

    async with running_writer(make_settings(batch_ms=200), on_commit) as writer:
        results = await asyncio.gather(*(writer.submit(r) for r in rows), return_exceptions=True)
        assert await writer.submit(row(stream, 10)) is False
    assert isinstance(results[2], Invalid)
    assert results[:2] + results[3:] == [False, False, False, False, False, True]
    assert [((c.row.time - T0).total_seconds(), c.duplicate) for c in committed] == [
        (0.0, False),
        (1.0, False),
        (3.0, False),
        (4.0, False),
        (5.0, False),
        (4.0, True),
        (10.0, False),
    ]
    assert len([r for r in caplog.records if r.getMessage() == "on_commit failed"]) >= 2
    assert await stored(conn, stream) == [0.0, 1.0, 3.0, 4.0, 5.0, 10.0]
