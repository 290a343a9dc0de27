"""Reports: the 00:15 UTC job (the previous day and its week) and `streamstats report`.

For every stream with data that day: a `stream_reports` row and `<streamId>.html` under
`$STREAMSTATS_REPORTS_DIR/YYYY-MM-DD/`, then `summary.csv` and `index.html` rebuilt from the day's
rows. The day is read from the rollup views a batch of streams at a time and its rows a few at a
time, so memory stays flat however many streams there are. A whole-day run writes into a fresh
directory and swaps it in, so re-running a day replaces it entirely; a run for some streams
replaces just their files and rows.

Weekly pages (`YYYY-Www/`) are rebuilt from the day rollups after each day of their week.
"""

from __future__ import annotations

import asyncio
import bisect
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
from typing import Any, TextIO

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
# Rows fetched at once from the cursors of episodes and of the summaries.
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
    """Write the reports of `day` (all its streams, or only `streams`); returns how many."""
    final = Path(settings.reports_dir) / day.isoformat()
    # A whole day is built aside and swapped in; some streams are written in place.
    target = final.with_name(f".{final.name}.{os.getpid()}.tmp") if streams is None else final
    if streams is None and target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True, exist_ok=True)

    loop = asyncio.get_running_loop()
    written = total = 0
    # Summaries of the pages written, recorded a batch at a time.
    done: list[dict[str, Any]] = []
    # Pages are built and written by one thread, off the event loop, while the next streams are
    # read (a page costs a few milliseconds, mostly holding the GIL: more threads or worker
    # processes would cost more than they save, and every thread grows a malloc arena of its own).
    in_flight: deque[asyncio.Future[dict[str, Any]]] = deque()
    # One transaction: the day's rows are replaced all at once.
    async with pool.acquire() as conn, conn.transaction():

        async def finish_one(total: int) -> None:
            nonlocal written
            done.append(await in_flight.popleft())
            written += 1
            if progress is not None:
                progress(written, total)
            if len(done) >= READ_BATCH:
                await _record(conn, day, done)
                done.clear()

        await conn.execute(queries["report_delete_day"], day, streams)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="report-pages") as builder:
            async for total, stream_day in _stream_days(conn, day, streams):
                page = target / f"{stream_day.stream_id}.html"
                in_flight.append(
                    loop.run_in_executor(
                        builder, _write_page, stream_day, page, settings.dashboard_url
                    )
                )
                if len(in_flight) >= IN_FLIGHT:
                    await finish_one(total)
            while in_flight:
                await finish_one(total)
        if done:
            await _record(conn, day, done)
        await _write_index(conn, target, day, settings.dashboard_url)
    if streams is None:
        _swap(target, final)
    logger.info(
        "wrote %d stream reports for %s",
        written,
        day.isoformat(),
        extra={"action": "reports_written", "day": day.isoformat(), "streams": written},
    )
    return written


async def _stream_days(
    conn: asyncpg.Connection, day: date, streams: list[uuid.UUID] | None
) -> AsyncIterator[tuple[int, report.StreamDay]]:
    """How many streams the day has and each one's `StreamDay`, in stream order: read through
    cursors (in a transaction) a batch of streams at a time, the minutes of a batch in one
    binary COPY, the episodes along with their streams. Nothing is held for the whole day."""
    start, end = report.day_bounds(day)
    days = await conn.cursor(queries["report_days"], start, streams)
    episodes = [
        _ByStream(await conn.cursor(queries[name], start, end, streams))
        for name in ("report_alerts", "report_drops", "report_advice")
    ]
    viewers = _ByStream(await conn.cursor(queries["report_viewer_experience"], start, streams))
    while batch := await days.fetch(READ_BATCH):
        ids = [d["stream_id"] for d in batch]
        matrix = await db.fetch_floats(
            conn, queries["report_minutes"], ids, start, end, columns=report.MINUTES_WIDTH
        )
        alerts, drops, advice = [await e.until(ids[-1]) for e in episodes]
        viewer = await viewers.until(ids[-1])
        for row, minutes in zip(batch, report.split_minutes(matrix, len(ids)), strict=True):
            daily = dict(row)
            total = daily.pop("day_streams")
            s = daily["stream_id"]
            yield (
                total,
                report.StreamDay(
                    s,
                    day,
                    daily,
                    minutes,
                    alerts.get(s, []),
                    drops.get(s, []),
                    advice.get(s, []),
                    next(iter(viewer.get(s, [])), None),
                ),
            )


def _write_page(d: report.StreamDay, path: Path, dashboard_url: str) -> dict[str, Any]:
    """Write a stream's page; returns its summary."""
    summary, page = report.render_stream(d, dashboard_url=dashboard_url)
    _write(path, page)
    return summary


async def _record(conn: asyncpg.Connection, day: date, summaries: list[dict[str, Any]]) -> None:
    """Add the `stream_reports` rows of pages written."""
    await conn.execute(
        queries["report_insert"],
        day,
        [uuid.UUID(s["stream_id"]) for s in summaries],
        summaries,
        [f"{day.isoformat()}/{s['stream_id']}.html" for s in summaries],
    )


async def _write_index(
    conn: asyncpg.Connection, folder: Path, day: date, dashboard_url: str
) -> None:
    """`summary.csv` and `index.html` from every row of the day (this run's and, for some
    streams, the others'), read worst first a few at a time."""
    summaries = await conn.cursor(queries["report_summaries"], day)
    with (
        _replacing(folder / "summary.csv") as csv_out,
        # Next to the pages, not in /tmp (often memory): the index rows of a large day.
        tempfile.TemporaryFile("w+", encoding="utf-8", dir=folder) as rows,
    ):
        index = report.DayIndex(day, csv_out, rows, dashboard_url=dashboard_url)
        while chunk := await summaries.fetch(FETCH_ROWS):
            for row in chunk:
                index.add(row["summary"])
        with _replacing(folder / "index.html") as out:
            index.write_index(out)


class _ByStream:
    """The rows of a cursor ordered by `stream_id`, taken a batch of streams at a time."""

    def __init__(self, cursor: asyncpg.cursor.Cursor[asyncpg.Record]) -> None:
        self._cursor = cursor
        self._ahead: list[asyncpg.Record] = []
        self._exhausted = False

    async def until(self, last: uuid.UUID) -> dict[uuid.UUID, list[dict[str, Any]]]:
        """The rows not taken yet of the streams up to `last` (in uuid order), as plain dicts
        per stream."""
        taken: list[asyncpg.Record] = []
        while True:
            cut = bisect.bisect_right(self._ahead, last, key=lambda r: r["stream_id"])
            taken += self._ahead[:cut]
            del self._ahead[:cut]
            if self._ahead or self._exhausted:
                return _by_stream(taken)
            self._ahead = await self._cursor.fetch(FETCH_ROWS)
            self._exhausted = len(self._ahead) < FETCH_ROWS


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
    one, never half of one."""
    partial = path.with_name(f".{path.name}.tmp")
    with partial.open("w", encoding="utf-8") as out:
        yield out
    partial.replace(path)


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
