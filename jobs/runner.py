"""The job runner: APScheduler ticks, one advisory lock per job, every run recorded in job_runs."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

import asyncpg
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from jobs.base import Job, JobContext
from jobs.locks import job_lock
from jobs.webhooks import WebhookWorker, start_worker
from streamstats import db
from streamstats.errors import StreamStatsError
from streamstats.settings import Settings
from streamstats.sql import queries

logger = logging.getLogger(__name__)

# Every runner lays its ticks on the same grid, counted from this instant, so that runners
# started at different moments agree on which tick a run belongs to.
ANCHOR = datetime(2000, 1, 1, tzinfo=UTC)
# How long a clean shutdown waits for runs in progress before cancelling them.
SHUTDOWN_GRACE = 30.0

Outcome = Literal["succeeded", "failed", "busy", "done"]


@dataclass(frozen=True)
class JobSpec:
    """A job in the registry: its name, `module:function`, period and offset on the grid."""

    name: str
    target: str
    every: Callable[[Settings], timedelta]
    offset: timedelta = timedelta(0)


REGISTRY: dict[str, JobSpec] = {
    spec.name: spec
    for spec in (
        JobSpec("rollups", "jobs.rollups:run", lambda s: s.rollup_interval),
        JobSpec("retention", "jobs.retention:run", lambda s: timedelta(hours=1)),
        JobSpec("drops", "jobs.drops:run", lambda s: s.drops_interval),
        JobSpec("rebuffering", "jobs.rebuffering:run", lambda s: s.rebuffering_interval),
        # Daily at 00:15 UTC: the day before is complete and its rollups refreshed.
        JobSpec(
            "reports", "jobs.reports:run_daily", lambda s: timedelta(days=1), timedelta(minutes=15)
        ),
    )
}


def tick_of(now: datetime, every: timedelta, offset: timedelta = timedelta(0)) -> datetime:
    """The latest tick at or before `now` on the grid ANCHOR + offset + n·every."""
    base = ANCHOR + offset
    return base + every * ((now - base) // every)


def misfire_grace(every: timedelta) -> int:
    """Seconds a late tick may still run: one period, at most an hour, at least a second."""
    return max(1, min(int(every.total_seconds()), 3600))


def resolve(target: str) -> Job:
    """Import `module:function` when the job first runs (jobs of other areas may be absent)."""
    module_name, _, function = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise StreamStatsError(f"job function {target} is not available: {exc}") from exc
    job = getattr(module, function, None)
    if job is None:
        raise StreamStatsError(f"job function {target} is not available: no {function!r}")
    return cast(Job, job)


@dataclass(frozen=True)
class RunRecord:
    """How the latest run of a job in this process ended (for metrics)."""

    outcome: Outcome
    finished_at: datetime
    seconds: float
    rows: int | None
    error: str | None


class Runner:
    """Runs jobs by name under their advisory lock and records each run."""

    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, registry: dict[str, JobSpec] | None = None
    ):
        self.settings = settings
        self.pool = pool
        self.registry = REGISTRY if registry is None else registry
        # Hooks for metrics: outcomes per (job, outcome) and the latest run per job.
        self.outcomes: Counter[tuple[str, Outcome]] = Counter()
        self.last: dict[str, RunRecord] = {}
        self._running: set[asyncio.Task[Any]] = set()

    def spec(self, name: str) -> JobSpec:
        try:
            return self.registry[name]
        except KeyError:
            known = ", ".join(sorted(self.registry))
            raise StreamStatsError(f"unknown job {name!r} (known: {known})") from None

    async def run(self, name: str, scheduled_for: datetime | None) -> RunRecord:
        """Run job `name` once for a tick (None: on demand), unless it is locked or already ran."""
        spec = self.spec(name)
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            record = await self._run(spec, scheduled_for)
        finally:
            if task is not None:
                self._running.discard(task)
        self.outcomes[(name, record.outcome)] += 1
        if record.outcome in ("succeeded", "failed"):
            self.last[name] = record
        return record

    async def _run(self, spec: JobSpec, scheduled_for: datetime | None) -> RunRecord:
        started = time.monotonic()

        def ended(outcome: Outcome, rows: int | None = None, error: str | None = None) -> RunRecord:
            return RunRecord(outcome, datetime.now(UTC), time.monotonic() - started, rows, error)

        log = {"job": spec.name, "scheduled_for": scheduled_for}
        async with job_lock(self.settings.database_url, spec.name) as conn:
            if conn is None:
                logger.info(
                    "job %s is running in another runner: skipped",
                    spec.name,
                    extra={"action": "job_skipped", "reason": "locked", **log},
                )
                return ended("busy")
            await conn.execute(queries["job_runs_abandon"], spec.name)
            run_id = await conn.fetchval(queries["job_run_start"], spec.name, scheduled_for)
            if run_id is None:
                logger.info(
                    "job %s already ran for the tick at %s: skipped",
                    spec.name,
                    scheduled_for,
                    extra={"action": "job_skipped", "reason": "tick_done", **log},
                )
                return ended("done")
            ctx = JobContext(self.settings, self.pool, now=datetime.now(UTC))
            try:
                rows = await resolve(spec.target)(ctx)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await conn.execute(
                        queries["job_run_finish"], run_id, "failed", None, "cancelled at shutdown"
                    )
                raise
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                await conn.execute(queries["job_run_finish"], run_id, "failed", None, error)
                record = ended("failed", error=error)
                logger.error(
                    "job %s failed after %.2f s: %s",
                    spec.name,
                    record.seconds,
                    error,
                    exc_info=not isinstance(exc, StreamStatsError),
                    extra={"action": "job_failed", "error": error, **log},
                )
                return record
            await conn.execute(queries["job_run_finish"], run_id, "succeeded", rows, None)
            record = ended("succeeded", rows=rows)
            logger.info(
                "job %s done in %.2f s: %s rows",
                spec.name,
                record.seconds,
                rows,
                extra={"action": "job_done", "rows": rows, "seconds": record.seconds, **log},
            )
            return record

    async def tick(self, name: str) -> None:
        """What the scheduler calls: run `name` for the current tick; never raises."""
        spec = self.spec(name)
        scheduled = tick_of(datetime.now(UTC), spec.every(self.settings), spec.offset)
        try:
            await self.run(name, scheduled)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The database was unreachable or the bookkeeping failed: the next tick retries.
            self.outcomes[(name, "failed")] += 1
            logger.exception(
                "job %s could not run", name, extra={"action": "job_failed", "job": name}
            )

    async def drain(self, timeout: float = SHUTDOWN_GRACE) -> None:
        """Wait for runs in progress to finish; cancel those still going after `timeout`."""
        running = set(self._running)
        if not running:
            return
        _, late = await asyncio.wait(running, timeout=timeout)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)


class JobScheduler(AsyncIOScheduler):
    """An AsyncIOScheduler that knows its Runner and stops without cutting runs short."""

    runner: Runner
    webhooks: WebhookWorker | None = None

    async def stop(self, timeout: float = SHUTDOWN_GRACE) -> None:
        """Stop firing, let runs in progress finish (up to `timeout`), then shut down."""
        self.pause()
        if self.webhooks is not None:
            await self.webhooks.stop()
        await self.runner.drain(timeout)
        self.shutdown(wait=False)


def _log_scheduler_event(event: JobEvent) -> None:
    reason = "missed its time" if event.code == EVENT_JOB_MISSED else "is still running"
    logger.warning(
        "job %s %s: skipping this tick",
        event.job_id,
        reason,
        extra={"action": "job_skipped", "job": event.job_id, "reason": reason},
    )


async def start_scheduler(
    settings: Settings,
    pool: asyncpg.Pool,
    *,
    jobs: Iterable[str] | None = None,
    registry: dict[str, JobSpec] | None = None,
) -> JobScheduler:
    """Schedule the jobs (all, or those named) on the running event loop and start firing.

    The full runner (no `jobs` named) also delivers webhooks (jobs/webhooks.py) until stopped.
    """
    # APScheduler announces every job it adds at INFO; the runner logs what operators need.
    logging.getLogger("apscheduler.scheduler").setLevel(logging.WARNING)
    runner = Runner(settings, pool, registry)
    names = list(runner.registry) if jobs is None else list(jobs)
    scheduler = JobScheduler(timezone=UTC)
    scheduler.runner = runner
    for name in names:
        spec = runner.spec(name)
        every = spec.every(settings)
        scheduler.add_job(
            runner.tick,
            IntervalTrigger(
                seconds=every.total_seconds(), start_date=ANCHOR + spec.offset, timezone=UTC
            ),
            args=[name],
            id=name,
            name=name,
            # A late tick still runs within one period; ticks missed while busy are merged.
            misfire_grace_time=misfire_grace(every),
            coalesce=True,
            max_instances=1,
        )
    scheduler.add_listener(_log_scheduler_event, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
    if jobs is None:
        scheduler.webhooks = await start_worker(settings)
    scheduler.start()
    logger.info(
        "job scheduler started: %s",
        ", ".join(f"{n} every {runner.spec(n).every(settings)}" for n in names),
        extra={"action": "scheduler_started", "jobs": names},
    )
    return scheduler


async def run_scheduler(settings: Settings) -> None:
    """`streamstats jobs`: run the scheduled jobs until SIGTERM or SIGINT, then stop cleanly."""
    pool = await db.create_pool(settings.database_url, max_size=settings.pool_size)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    try:
        for sig in signals:
            loop.add_signal_handler(sig, stop.set)
        scheduler = await start_scheduler(settings, pool)
        await stop.wait()
        logger.info("stopping the job scheduler", extra={"action": "scheduler_stopping"})
        await scheduler.stop()
        logger.info("job scheduler stopped", extra={"action": "scheduler_stopped"})
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await pool.close()


async def run_once(
    settings: Settings, name: str, *, registry: dict[str, JobSpec] | None = None
) -> int:
    """`streamstats jobs --once NAME`: run one job now, record it, and return its rows."""
    runner_registry = REGISTRY if registry is None else registry
    if name not in runner_registry:
        known = ", ".join(sorted(runner_registry))
        raise StreamStatsError(f"unknown job {name!r} (known: {known})")
    pool = await db.create_pool(settings.database_url, max_size=settings.pool_size)
    try:
        record = await Runner(settings, pool, registry).run(name, None)
    finally:
        await pool.close()
    if record.outcome == "busy":
        raise StreamStatsError(
            f"job {name} is running in another job runner right now; try again when it is done"
        )
    if record.outcome == "failed":
        raise StreamStatsError(f"job {name} failed: {record.error}")
    print(f"{name}: {record.rows} rows in {record.seconds:.2f} s")
    return record.rows or 0
