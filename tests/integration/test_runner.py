"""The job runner: one run per job and tick across runners, failures recorded, clean shutdown."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from jobs.base import JobContext
from jobs.runner import JobSpec, Runner, run_once, start_scheduler
from streamstats import db
from streamstats.errors import StreamStatsError

# What the test jobs below did, in this process: (job, start, end) on the monotonic clock.
CALLS: list[tuple[str, float, float]] = []
# Set by the test that runs `waiting` (an Event belongs to one event loop, hence one test).
RELEASE: dict[str, asyncio.Event] = {}


async def slow_job(ctx: JobContext) -> int:
    """Outlasts its period, so that the next tick finds it still running."""
    start = time.monotonic()
    await asyncio.sleep(0.7)
    CALLS.append(("slow", start, time.monotonic()))
    return 1


async def failing_job(ctx: JobContext) -> int:
    CALLS.append(("failing", time.monotonic(), time.monotonic()))
    raise ValueError("the disk is full")


async def quick_job(ctx: JobContext) -> int:
    CALLS.append(("quick", time.monotonic(), time.monotonic()))
    return 7


async def waiting_job(ctx: JobContext) -> int:
    await RELEASE["waiting"].wait()
    return 0


def spec(name: str, function: str, every: float = 0.5) -> JobSpec:
    return JobSpec(name, f"{__name__}:{function}", lambda s: timedelta(seconds=every))


REGISTRY = {
    "slow": spec("slow", "slow_job"),
    "failing": spec("failing", "failing_job"),
    "quick": spec("quick", "quick_job"),
    "waiting": spec("waiting", "waiting_job"),
    "missing": spec("missing", "no_such_function"),
}


@pytest.fixture(autouse=True)
def _reset_calls():
    CALLS.clear()
    RELEASE.clear()


async def runs(conn: asyncpg.Connection, job: str) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM job_runs WHERE job = $1 ORDER BY started_at", job)


@pytest.mark.slow
async def test_two_runners_run_each_job_once_per_tick(make_settings, conn):
    settings = make_settings()
    pools = [await db.create_pool(settings.database_url, max_size=2) for _ in range(2)]
    schedulers = [
        await start_scheduler(settings, pool, jobs=["slow", "quick"], registry=REGISTRY)
        for pool in pools
    ]
    try:
        await asyncio.sleep(4.2)
    finally:
        for scheduler in schedulers:
            await scheduler.stop()
        for pool in pools:
            await pool.close()

    for job in ("slow", "quick"):
        recorded = await runs(conn, job)
        ticks = [r["scheduled_for"] for r in recorded]
        calls = [c for c in CALLS if c[0] == job]
        assert len(ticks) == len(set(ticks)), f"{job} ran twice for a tick"
        assert len(calls) == len(recorded) >= 3, f"{job}: {len(calls)} calls, {len(recorded)} runs"
        assert all(r["status"] == "succeeded" for r in recorded)
    # The slow job outlasts its period: with a lock, its runs never overlap across runners.
    slow = sorted((start, end) for name, start, end in CALLS if name == "slow")
    assert all(prev_end <= start for (_, prev_end), (start, _) in itertools.pairwise(slow))
    # Both runners tried: each tick was claimed by one and skipped (locked or done) by the other.
    outcomes = [s.runner.outcomes for s in schedulers]
    assert all(o[("quick", "succeeded")] > 0 for o in outcomes)
    skipped = sum(o[("quick", "busy")] + o[("quick", "done")] for o in outcomes)
    assert skipped > 0


@pytest.mark.slow
async def test_a_failing_job_records_its_error_and_the_others_still_run(make_settings, conn):
    settings = make_settings()
    pool = await db.create_pool(settings.database_url, max_size=2)
    scheduler = await start_scheduler(settings, pool, jobs=["failing", "quick"], registry=REGISTRY)
    try:
        await asyncio.sleep(1.8)
    finally:
        await scheduler.stop()
        await pool.close()
    failed = await runs(conn, "failing")
    assert len(failed) >= 2, "a failing job is retried on its next tick"
    assert {r["status"] for r in failed} == {"failed"}
    assert all("ValueError: the disk is full" in r["error"] for r in failed)
    assert all(r["finished_at"] >= r["started_at"] for r in failed)
    quick = await runs(conn, "quick")
    assert len(quick) >= 2 and {r["status"] for r in quick} == {"succeeded"}
    assert {r["rows"] for r in quick} == {7}


async def test_the_lock_lasts_exactly_as_long_as_the_run(make_settings, conn):
    settings = make_settings()
    pool = await db.create_pool(settings.database_url, max_size=2)
    release = RELEASE["waiting"] = asyncio.Event()
    probe = "SELECT pg_try_advisory_lock(hashtextextended('streamstats.job:waiting', 0))"
    try:
        run = asyncio.create_task(Runner(settings, pool, REGISTRY).run("waiting", None))
        for _ in range(50):
            if await conn.fetchval("SELECT count(*) FROM job_runs WHERE job = 'waiting'"):
                break
            await asyncio.sleep(0.05)
        assert await conn.fetchval(probe) is False, "another session could take the lock"
        other = await Runner(settings, pool, REGISTRY).run("waiting", None)
        assert other.outcome == "busy"
        release.set()
        assert (await run).outcome == "succeeded"
        assert await conn.fetchval(probe) is True, "the lock outlived the run"
        await conn.execute("SELECT pg_advisory_unlock_all()")
    finally:
        release.set()
        await pool.close()


async def test_a_run_left_running_by_a_dead_runner_is_closed_as_failed(make_settings, conn):
    await conn.execute(
        "INSERT INTO job_runs (job, started_at) VALUES ('quick', now() - '1h'::interval)"
    )
    settings = make_settings()
    pool = await db.create_pool(settings.database_url, max_size=2)
    try:
        await Runner(settings, pool, REGISTRY).run("quick", None)
    finally:
        await pool.close()
    statuses = [(r["status"], r["error"]) for r in await runs(conn, "quick")]
    assert statuses == [
        ("failed", "the job runner stopped before the run finished"),
        ("succeeded", None),
    ]


async def test_run_once_raises_a_clear_error_when_the_job_fails(make_settings, conn):
    settings = make_settings()
    with pytest.raises(StreamStatsError, match="job failing failed: ValueError: the disk is full"):
        await run_once(settings, "failing", registry=REGISTRY)
    with pytest.raises(StreamStatsError, match="not available"):
        await run_once(settings, "missing", registry=REGISTRY)
    with pytest.raises(StreamStatsError, match="unknown job 'nope'"):
        await run_once(settings, "nope", registry=REGISTRY)
    assert [r["status"] for r in await runs(conn, "failing")] == ["failed"]


def _cli(database_url: str, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "streamstats.cli", *args],
        env={**os.environ, "DATABASE_URL": database_url, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_jobs_once_runs_the_rollups_and_records_it(database_url):
    process = _cli(database_url, "jobs", "--once", "rollups")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert out.startswith("rollups: 0 rows")

    async def recorded() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(database_url)
        try:
            return await conn.fetch("SELECT * FROM job_runs")
        finally:
            await conn.close()

    [run] = asyncio.run(recorded())
    assert (run["job"], run["status"], run["scheduled_for"]) == ("rollups", "succeeded", None)


@pytest.mark.slow
def test_the_scheduler_stops_cleanly_on_sigterm(database_url):
    started = datetime.now(UTC)
    process = _cli(
        database_url,
        "jobs",
        STREAMSTATS_ROLLUP_INTERVAL="0.5s",
        STREAMSTATS_DROPS_INTERVAL="1h",
    )
    try:

        async def rollup_runs() -> int:
            conn = await asyncpg.connect(database_url)
            try:
                return await conn.fetchval(
                    "SELECT count(*) FROM job_runs WHERE job = 'rollups' AND status = 'succeeded' "
                    "AND started_at > $1",
                    started,
                )
            finally:
                await conn.close()

        deadline = time.monotonic() + 20
        while asyncio.run(rollup_runs()) < 2:
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "no rollups run within 20 s"
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "job scheduler stopped" in err


async def test_a_tick_already_run_by_another_runner_is_not_run_again(make_settings, conn):
    """The lock is free again once the first runner is done; the tick still runs only once."""
    settings = make_settings()
    tick = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)
    pools = [await db.create_pool(settings.database_url, max_size=2) for _ in range(2)]
    try:
        first = await Runner(settings, pools[0], REGISTRY).run("quick", tick)
        late = await Runner(settings, pools[1], REGISTRY).run("quick", tick)
        following = await Runner(settings, pools[1], REGISTRY).run(
            "quick", tick + timedelta(seconds=30)
        )
    finally:
        for pool in pools:
            await pool.close()
    assert (first.outcome, late.outcome, following.outcome) == ("succeeded", "done", "succeeded")
    assert len(CALLS) == 2
    assert [r["scheduled_for"] for r in await runs(conn, "quick")] == [
        tick,
        tick + timedelta(seconds=30),
    ]
