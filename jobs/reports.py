"""Reports: the 00:15 UTC job (the previous day and its week) and `streamstats report`.

For every stream with data that day: a `stream_reports` row and `<streamId>.html` under
`$STREAMSTATS_REPORTS_DIR/YYYY-MM-DD/`, then `summary.csv` and `index.html` rebuilt from the day's
rows. The day is read from the rollup views a batch of streams at a time and its rows a few at a
time, so memory stays flat however many streams there are, and no transaction stays open for the
run (see `write_day`). A whole-day run writes into a fresh directory and swaps it in, so
re-running a day replaces it entirely; a run for some streams replaces just their files and rows.

Weekly pages (`YYYY-Www/`) are rebuilt from the day rollups after each day of their week.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO, cast

import asyncpg
from tqdm import tqdm

from analytics import report, weekly
from jobs.base import JobContext
from streamstats import db
from streamstats.db import create_pool
from streamstats.settings import Settings
from streamstats.sql import queries

logger = logging.getLogger(__name__)

# Pages being built while the next streams are read: enough to keep the database and this
# process busy at once, few enough that memory stays flat however many streams there are.
IN_FLIGHT = 4
# Streams whose minutes are read in one query (one day of one stream is ~170 KB as floats); also
# the `stream_reports` rows recorded at once. Small, because glibc's malloc lets freed blocks
# of the size of the largest buffer freed stay with the process: with 50 streams a read
# (13 MB copied in) the job settled 50 MiB higher after a few hundred streams than with 10.
READ_BATCH = 10
# How often a run waits for another run of the same day to end.
LOCK_POLL_SECONDS = 1.0
# Rows fetched at once from the cursor of the summaries.
FETCH_ROWS = 100


async def run_daily(ctx: JobContext) -> int:
    """The scheduled job: every complete UTC day not reported yet; returns reports written.

    The scheduler drops a 00:15 run missed by more than its grace, so each run writes every day
    after the last one in `stream_reports` up to yesterday (on an empty table, only yesterday),
    never further back than the 1-minute rollups the reports are read from are kept.
    """
    written = 0
    days = await days_to_report(ctx)
    for day in days:
        written += await write_day(ctx.settings, ctx.pool, day)
    # Each week is rewritten with every day of it, so it is whole once its Sunday is reported.
    for monday in sorted({weekly.monday_of(day) for day in days}):
        await write_week(ctx.settings, ctx.pool, monday)
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


async def report_command(
    settings: Settings, *, day: date | None, week: str | None, streams: list[str]
) -> None:
    """`streamstats report --day D [--stream ID]...` (with a progress bar) or `--week W`."""
    ids = [uuid.UUID(s) for s in streams] or None
    pool = await create_pool(settings.database_url, max_size=2)
    try:
        if week is not None:
            folder = await write_week(settings, pool, weekly.week_start(week))
            print(f"weekly report in {folder}")
            return
        assert day is not None
        with tqdm(desc=f"report {day.isoformat()}", unit="stream") as bar:

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            written = await write_day(settings, pool, day, ids, progress=progress)
        # The day's pages link to their week, which now includes the day.
        await write_week(settings, pool, weekly.monday_of(day))
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
) -> int:
    """Write the reports of `day` (all its streams, or only `streams`); returns how many.

    No transaction stays open while the day is read and its pages built: the streams are read a
    keyset page at a time (`READ_BATCH` streams after the last one read, in stream order), each
    page's minutes, episodes and viewer experience with plain queries. The rows of the pages
    written are kept in a session temporary table of the run's connection, and only at the end
    replace the day's `stream_reports` rows in one short transaction (all of the day's rows for a
    whole-day run, just those of `streams` otherwise), so a run that fails leaves the rows as they
    were (and the daily job still sees the day as not reported). `summary.csv` and `index.html`
    are then read worst first through a cursor in a short read-only transaction of their own.

    Runs of the same day are serialized by a session advisory lock keyed by the day
    (`hashtextextended('streamstats.report:YYYY-MM-DD', 0)`, the `report_try_lock_day` query),
    held on the run's connection for the run: a second run waits for the first to end. A session
    lock is not a transaction: it holds back neither vacuum nor `streamstats migrate`.
    """
    final = Path(settings.reports_dir) / day.isoformat()
    loop = asyncio.get_running_loop()
    written = 0
    # Summaries of the pages written, recorded a batch at a time.
    done: list[dict[str, Any]] = []
    # Pages are built and written by one thread, off the event loop, while the next streams are
    # read (a page costs a few milliseconds, mostly holding the GIL: more threads or worker
    # processes would cost more than they save, and every thread grows a malloc arena of its own).
    in_flight: deque[asyncio.Future[dict[str, Any]]] = deque()
    # A whole day is built aside and swapped in (removed if the run fails); some streams are
    # written in place.
    target = final.with_name(f".{final.name}.{os.getpid()}.tmp") if streams is None else final
    async with pool.acquire() as conn:
        await _lock_day(conn, day)
        try:
            if streams is None and target.exists():
                shutil.rmtree(target)
            target.mkdir(parents=True, exist_ok=True)
            await conn.execute(queries["report_stage_create"])
            start = report.day_bounds(day)[0]
            total = await conn.fetchval(queries["report_day_streams"], start, streams)

            async def finish_one() -> None:
                nonlocal written
                done.append(await in_flight.popleft())
                written += 1
                if progress is not None:
                    progress(written, total)
                if len(done) >= READ_BATCH:
                    await _stage(conn, day, done)
                    done.clear()

            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="report-pages") as builder:
                async for stream_day in _stream_days(conn, day, streams):
                    page = target / f"{stream_day.stream_id}.html"
                    in_flight.append(
                        loop.run_in_executor(
                            builder, _write_page, stream_day, page, settings.dashboard_url
                        )
                    )
                    if len(in_flight) >= IN_FLIGHT:
                        await finish_one()
                while in_flight:
                    await finish_one()
            if done:
                await _stage(conn, day, done)
            # The day's rows are replaced all at once.
            async with conn.transaction():
                await conn.execute(queries["report_delete_day"], day, streams)
                await conn.execute(queries["report_insert_staged"], day)
            await _write_index(conn, target, day, settings.dashboard_url)
            if streams is None:
                _swap(target, final)
        except BaseException:
            if streams is None:
                shutil.rmtree(target, ignore_errors=True)
            raise
        finally:
            if not conn.is_closed():
                await conn.execute(queries["report_stage_drop"])
                await conn.execute(queries["report_unlock_day"], day)
    logger.info(
        "wrote %d stream reports for %s",
        written,
        day.isoformat(),
        extra={"action": "reports_written", "day": day.isoformat(), "streams": written},
    )
    return written


async def _lock_day(conn: asyncpg.Connection, day: date) -> None:
    """Take the session advisory lock of `day`'s reports, waiting for a run holding it to end.

    Polled rather than waited for in `pg_advisory_lock`: a statement waiting keeps its snapshot,
    which would hold back vacuum for as long as the other run takes."""
    while not await conn.fetchval(queries["report_try_lock_day"], day):
        logger.info("waiting for another run of the %s reports", day.isoformat())
        await asyncio.sleep(LOCK_POLL_SECONDS)


async def _stream_days(
    conn: asyncpg.Connection, day: date, streams: list[uuid.UUID] | None
) -> AsyncIterator[report.StreamDay]:
    """Each stream's `StreamDay`, in stream order: the streams read a keyset page of
    `READ_BATCH` at a time, the minutes of a page in one binary COPY, its episodes and viewer
    experience in one query each. Nothing is held for the whole day, and no transaction."""
    start, end = report.day_bounds(day)
    last: uuid.UUID | None = None
    while batch := await conn.fetch(queries["report_days"], start, streams, last, READ_BATCH):
        ids = [d["stream_id"] for d in batch]
        last = ids[-1]
        matrix = await db.fetch_floats(
            conn, queries["report_minutes"], ids, start, end, columns=report.MINUTES_WIDTH
        )
        alerts, drops, advice = [
            _by_stream(await conn.fetch(queries[name], start, end, ids))
            for name in ("report_alerts", "report_drops", "report_advice")
        ]
        viewer = _by_stream(await conn.fetch(queries["report_viewer_experience"], start, ids))
        for row, minutes in zip(batch, report.split_minutes(matrix, len(ids)), strict=True):
            s = row["stream_id"]
            yield report.StreamDay(
                s,
                day,
                dict(row),
                minutes,
                alerts.get(s, []),
                drops.get(s, []),
                advice.get(s, []),
                next(iter(viewer.get(s, [])), None),
            )


def _write_page(d: report.StreamDay, path: Path, dashboard_url: str) -> dict[str, Any]:
    """Write a stream's page; returns its summary."""
    summary, page = report.render_stream(d, dashboard_url=dashboard_url)
    _write(path, page)
    return summary


async def _stage(conn: asyncpg.Connection, day: date, summaries: list[dict[str, Any]]) -> None:
    """Keep the `stream_reports` rows of pages written in the run's temporary table."""
    await conn.execute(
        queries["report_stage"],
        [uuid.UUID(s["stream_id"]) for s in summaries],
        summaries,
        [f"{day.isoformat()}/{s['stream_id']}.html" for s in summaries],
    )


async def _write_index(
    conn: asyncpg.Connection, folder: Path, day: date, dashboard_url: str
) -> None:
    """`summary.csv` and `index.html` from every row of the day (this run's and, for some
    streams, the others'), read worst first a few at a time.

    Through a cursor in a read-only transaction open only for this step, not keyset pages: the
    order is of expressions over each row's `summary` with no index behind them, so every keyset
    page would read (and detoast) all of the day's summaries again; one sort does it once."""
    with (
        _replacing(folder / "summary.csv") as csv_out,
        # Next to the pages, not in /tmp (often memory): the index rows of a large day.
        tempfile.TemporaryFile("w+", encoding="utf-8", dir=folder) as rows,
    ):
        index = report.DayIndex(day, csv_out, rows, dashboard_url=dashboard_url)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            summaries = await conn.cursor(queries["report_summaries"], day)
            while chunk := await summaries.fetch(FETCH_ROWS):
                for row in chunk:
                    index.add(row["summary"])
        with _replacing(folder / "index.html") as out:
            index.write_index(out)


async def write_week(settings: Settings, pool: asyncpg.Pool, monday: date) -> Path:
    """Write `YYYY-Www/` (index.html, summary.csv, platform.csv) from the day rollups of that
    ISO week and the week before; returns the folder. Replaces the folder entirely."""
    before = datetime(monday.year, monday.month, monday.day, tzinfo=UTC) - timedelta(days=7)
    async with pool.acquire() as conn:
        rows = await conn.fetch(queries["report_week_streams"], before)
    summaries = [s for r in rows if (s := weekly.summarize_stream(r, monday)) is not None]
    days = weekly.platform(rows, monday)
    final = Path(settings.reports_dir) / weekly.week_name(monday)
    target = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    _write(target / "summary.csv", weekly.summary_csv(summaries))
    _write(target / "platform.csv", weekly.platform_csv(days[7:]))
    folders = {p.name for p in final.parent.iterdir() if p.is_dir()}
    page = weekly.week_page(
        monday, summaries, days, dashboard_url=settings.dashboard_url, folders=folders
    )
    _write(target / "index.html", page)
    _swap(target, final)
    logger.info(
        "wrote the weekly report %s",
        final.name,
        extra={"action": "weekly_report_written", "week": final.name, "streams": len(summaries)},
    )
    return final


def _by_stream(rows: list[asyncpg.Record]) -> dict[uuid.UUID, list[dict[str, Any]]]:
    """Episode rows (ordered by stream) as plain dicts per stream."""
    out: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(row["stream_id"], []).append(dict(row))
    return out


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[TextIO]:
    """A file to write that then replaces `path` atomically: readers see the old or the new
    one, never half of one. It is written under a name of its own next to `path` (two writers
    of the same file do not mix), removed if writing it fails."""
    partial: Path | None = None
    try:
        with tempfile.NamedTemporaryFile(
            "w",
            encoding="utf-8",
            dir=path.parent,
            prefix=f".{path.name}.",
            suffix=".tmp",
            delete=False,
        ) as out:
            partial = Path(out.name)
            yield cast(TextIO, out)
        os.replace(partial, path)
    except BaseException:
        if partial is not None:
            partial.unlink(missing_ok=True)
        raise


def _write(path: Path, text: str) -> None:
    with _replacing(path) as out:
        out.write(text)


def _swap(built: Path, final: Path) -> None:
    old = final.with_name(f".{final.name}.{os.getpid()}.old")
    if final.exists():
        final.replace(old)
    built.replace(final)
    if old.exists():
        shutil.rmtree(old)
