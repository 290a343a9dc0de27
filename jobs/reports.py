"""Daily reports: the 00:15 UTC job (the previous day) and `streamstats report` (any day).

For every stream with data that day: a `stream_reports` row and `<streamId>.html` under
`$STREAMSTATS_REPORTS_DIR/YYYY-MM-DD/`, then `summary.csv` and `index.html` rebuilt from the day's
rows. Read from the rollup views, one stream at a time (memory stays flat however many streams).
A whole-day run writes into a fresh directory and swaps it in, so re-running a day replaces it
entirely; a run for some streams replaces just their files and rows.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pandas as pd
from tqdm import tqdm

from analytics import report
from jobs.base import JobContext
from streamstats.db import create_pool
from streamstats.settings import Settings
from streamstats.sql import queries

logger = logging.getLogger(__name__)

# Below this many streams, starting worker processes costs more than it saves.
PARALLEL_FROM = 20
ALERT_COLUMNS = ["stream_id", "type", "value", "threshold", "raised_at", "cleared_at"]
DROP_COLUMNS = ["stream_id", "started_at", "ended_at", "baseline_kbps", "observed_kbps", "drop_pct"]


async def run_daily(ctx: JobContext) -> int:
    """The scheduled job: every complete UTC day not reported yet; returns reports written.

    The scheduler drops a 00:15 run missed by more than its grace, so each run writes every day
    after the last one in `stream_reports` up to yesterday (on an empty table, only yesterday),
    never further back than the 1-minute rollups the reports are read from are kept.
    """
    written = 0
    for day in await days_to_report(ctx):
        written += await write_day(ctx.settings, ctx.pool, day, workers=os.cpu_count() or 1)
    return written


async def days_to_report(ctx: JobContext) -> list[date]:
    """The complete days the daily job has still to write, oldest first."""
    yesterday = ctx.now.date() - timedelta(days=1)
    # The oldest day whose 1-minute rollups are all still kept.
    oldest = (ctx.now - ctx.settings.rollup_1m_retention).date() + timedelta(days=1)
    async with ctx.pool.acquire() as conn:
        last: date | None = await conn.fetchval(queries["report_last_day"], yesterday)
    first = yesterday if last is None else max(last + timedelta(days=1), min(oldest, yesterday))
    return [first + timedelta(days=n) for n in range((yesterday - first).days + 1)]


async def report_command(settings: Settings, *, day: date, streams: list[str]) -> None:
    """`streamstats report --day D [--stream ID]...`, with a progress bar."""
    ids = [uuid.UUID(s) for s in streams] or None
    pool = await create_pool(settings.database_url, max_size=2)
    try:
        with tqdm(desc=f"report {day.isoformat()}", unit="stream") as bar:

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            written = await write_day(
                settings, pool, day, ids, progress=progress, workers=os.cpu_count() or 1
            )
    finally:
        await pool.close()
    print(f"{written} stream reports in {settings.reports_dir / day.isoformat()}")


async def write_day(
    settings: Settings,
    pool: asyncpg.Pool,
    day: date,
    streams: list[uuid.UUID] | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 1,
) -> int:
    """Write the reports of `day` (all its streams, or only `streams`); returns how many.

    `workers` > 1 renders the pages in that many (low-priority) processes.
    """
    start, end = report.day_bounds(day)
    final = Path(settings.reports_dir) / day.isoformat()
    # A whole day is built aside and swapped in; some streams are written in place.
    target = final.with_name(f".{final.name}.{os.getpid()}.tmp") if streams is None else final
    if streams is None and target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True, exist_ok=True)

    async with pool.acquire() as conn:
        days = await conn.fetch(queries["report_days"], start, streams)
        alerts = _frame(await conn.fetch(queries["report_alerts"], start, end), ALERT_COLUMNS)
        drops = _frame(await conn.fetch(queries["report_drops"], start, end), DROP_COLUMNS)
        alerts_by = dict(tuple(alerts.groupby("stream_id"))) if len(alerts) else {}
        drops_by = dict(tuple(drops.groupby("stream_id"))) if len(drops) else {}
        summaries: list[dict[str, Any]] = []
        executor = _executor(workers, len(days))
        loop = asyncio.get_running_loop()
        # Rendering is CPU work, done in worker processes (or a thread) off the event loop; a
        # few pages are in flight at once, so memory stays flat however many streams there are.
        in_flight: deque[asyncio.Future[tuple[dict[str, Any], str]]] = deque()

        async def finish_one() -> None:
            summary, page = await in_flight.popleft()
            _write(target / f"{summary['stream_id']}.html", page)
            summaries.append(summary)
            if progress is not None:
                progress(len(summaries), len(days))

        try:
            for daily in days:
                stream_id = daily["stream_id"]
                rows = await conn.fetch(queries["report_minutes"], stream_id, start, end)
                minutes = pd.DataFrame([dict(r) for r in rows])
                in_flight.append(
                    loop.run_in_executor(
                        executor,
                        _render,
                        stream_id,
                        day,
                        dict(daily),
                        minutes,
                        alerts_by.get(stream_id, alerts.iloc[0:0]),
                        drops_by.get(stream_id, drops.iloc[0:0]),
                    )
                )
                if len(in_flight) >= 2 * workers:
                    await finish_one()
            while in_flight:
                await finish_one()
        finally:
            if executor is not None:
                executor.shutdown(cancel_futures=True)

        async with conn.transaction():
            await conn.execute(queries["report_delete_day"], day, streams)
            await conn.execute(
                queries["report_insert"],
                day,
                [uuid.UUID(s["stream_id"]) for s in summaries],
                summaries,
                [f"{day.isoformat()}/{s['stream_id']}.html" for s in summaries],
            )
            everything = [r["summary"] for r in await conn.fetch(queries["report_summaries"], day)]
            _write(target / "summary.csv", report.summary_csv(everything))
            _write(target / "index.html", report.index_page(day, everything))
    if streams is None:
        _swap(target, final)
    logger.info(
        "wrote %d stream reports for %s",
        len(summaries),
        day.isoformat(),
        extra={"action": "reports_written", "day": day.isoformat(), "streams": len(summaries)},
    )
    return len(summaries)


def _executor(workers: int, streams: int) -> ProcessPoolExecutor | None:
    """Worker processes when they pay for their start-up (about a second each), else None."""
    if workers <= 1 or streams < PARALLEL_FROM:
        return None
    # spawn, not fork: the parent has threads and an event loop a forked child must not inherit.
    return ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=_lower_priority
    )


def _lower_priority() -> None:
    # A report is never urgent: ingest running on the same machine comes first.
    os.nice(10)


def _render(
    stream_id: Any,
    day: date,
    daily: dict[str, Any],
    minutes: pd.DataFrame,
    alerts: pd.DataFrame,
    drops: pd.DataFrame,
) -> tuple[dict[str, Any], str]:
    summary = report.summarize(stream_id, day, daily, minutes, alerts, drops)
    images = report.charts(minutes, drops, day)
    return summary, report.stream_page(summary, images, alerts, drops)


def _frame(rows: list[asyncpg.Record], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame([tuple(r) for r in rows], columns=columns)


def _write(path: Path, text: str) -> None:
    """Replace a file atomically: readers see the old or the new one, never half of one."""
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def _swap(built: Path, final: Path) -> None:
    old = final.with_name(f".{final.name}.{os.getpid()}.old")
    if final.exists():
        final.replace(old)
    built.replace(final)
    if old.exists():
        shutil.rmtree(old)
