"""Daily reports for seeded data: numbers against SQL on the raw rows, files, re-runs, Chromium."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import random
import re
import shutil
import subprocess
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from ingest.beacon import BeaconRow
from ingest.writer import BEACONS, BatchWriter
from jobs import reports, rollups
from jobs.base import JobContext
from streamstats.db import create_pool

JS = Path(__file__).resolve().parent.parent / "js"
DAY = date(2026, 3, 2)
START = datetime(2026, 3, 2, tzinfo=UTC)


async def seed(
    conn, stream: uuid.UUID, *, hours: float, poor_from: int | None = None, day: date = DAY
) -> None:
    """Samples every 10 s from 06:00 of `day` for `hours`; poor quality from the `poor_from`-th
    on."""
    rng = random.Random(f"{stream}{day}")
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    rows = []
    for i in range(int(hours * 360)):
        poor = poor_from is not None and i >= poor_from
        bitrate = rng.uniform(600, 900) if poor else rng.uniform(2000, 3000)
        fps = rng.choice([12.0, 18.0]) if poor else rng.choice([29.0, 30.0])
        loss = rng.uniform(4, 9) if poor else rng.uniform(0, 0.8)
        latency = rng.uniform(150, 400) if poor else rng.uniform(20, 90)
        quality = "poor" if poor else "good"
        at = start + timedelta(hours=6, seconds=10 * i)
        rows.append((at, stream, bitrate, fps, loss, latency, quality))
    # A sample just outside the day on either side must not count.
    rows.append((start - timedelta(seconds=1), stream, 1.0, 1.0, 50.0, 5000.0, "poor"))
    rows.append((start + timedelta(days=1), stream, 1.0, 1.0, 50.0, 5000.0, "poor"))
    await conn.copy_records_to_table(
        "stream_stats",
        records=rows,
        columns=["time", "stream_id", "bitrate_kbps", "fps", "packet_loss_pct", "latency_ms",
                 "quality"],
    )  # fmt: skip


EXPECTED = """
SELECT count(*) AS samples,
       60 * count(DISTINCT date_trunc('minute', time)) AS time_live_s,
       avg(bitrate_kbps) AS bitrate_kbps_avg,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY bitrate_kbps) AS bitrate_kbps_p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY bitrate_kbps) AS bitrate_kbps_p95,
       avg(fps) AS fps_avg, min(fps) AS fps_min,
       avg(packet_loss_pct) AS packet_loss_pct_avg, max(packet_loss_pct) AS packet_loss_pct_max,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS latency_ms_p95,
       avg((quality = 'good')::int) AS good_share,
       avg((quality = 'poor')::int) AS poor_share
FROM stream_stats
WHERE stream_id = $1 AND time >= $2 AND time < $2 + interval '1 day'
"""

# The documented approximations, computed from raw rows per minute (not from the rollups).
APPROXIMATED = """
WITH minutes AS (
    SELECT date_trunc('minute', time) AS minute, count(*) AS n,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY bitrate_kbps) AS bitrate_median,
           avg(latency_ms) AS latency_mean
    FROM stream_stats
    WHERE stream_id = $1 AND time >= $2 AND time < $2 + interval '1 day'
    GROUP BY 1
),
b AS (SELECT bitrate_median AS v, sum(n) OVER (ORDER BY bitrate_median, minute) AS c,
             sum(n) OVER () AS total FROM minutes),
l AS (SELECT latency_mean AS v, sum(n) OVER (ORDER BY latency_mean, minute) AS c,
             sum(n) OVER () AS total FROM minutes)
SELECT (SELECT min(v) FROM b WHERE c >= 0.05 * total) AS bitrate_kbps_p5,
       (SELECT min(v) FROM l WHERE c >= 0.5 * total) AS latency_ms_p50
"""


@pytest.fixture
async def pool(database_url):
    pool = await create_pool(database_url, max_size=2)
    yield pool
    await pool.close()


@pytest.fixture
async def seeded(conn, pool, make_settings):
    steady, congested, short = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await seed(conn, steady, hours=3)
    await seed(conn, congested, hours=3, poor_from=700)
    await seed(conn, short, hours=0.5)
    await conn.execute(
        "INSERT INTO stream_alerts (stream_id, type, value, threshold, raised_at, cleared_at) "
        "VALUES ($1, 'packet_loss_high', 7, 5, $2, $3), ($1, 'fps_low', 12, 20, $2, NULL)",
        congested,
        START + timedelta(hours=8),
        START + timedelta(hours=8, minutes=5),
    )
    await conn.execute(
        "INSERT INTO bitrate_drops (stream_id, started_at, ended_at, baseline_kbps, "
        "observed_kbps, drop_pct) VALUES ($1, $2, $3, 2500, 700, 72)",
        congested,
        START + timedelta(hours=7, minutes=57),
        START + timedelta(hours=8, minutes=20),
    )
    await conn.executemany(
        "INSERT INTO stream_advice (stream_id, issued_at, action, target, reasons, severity, "
        "basis) VALUES ($1, $2, $3, $4::text::jsonb, $5, $6, '{}')",
        [(s, at, action, json.dumps(target), reasons, severity)
         for s, at, action, target, reasons, severity in [
            (congested, START + timedelta(hours=8), "lower",
             {"bitrate": 1200, "width": 1280, "height": 720, "fps": 24},
             ["packet_loss", "latency"], "critical"),
            (congested, START + timedelta(hours=8, minutes=40), "raise",
             {"bitrate": 1500, "width": 1280, "height": 720, "fps": 24}, ["recovered"], "info"),
            (congested, START - timedelta(minutes=1), "lower",
             {"bitrate": 900, "width": None, "height": None, "fps": None}, ["headroom"], "warning"),
        ]],
    )  # fmt: skip
    # Materialize the rollups the way the jobs runner does, so reports read them.
    await rollups.run(JobContext(make_settings(), pool, START + timedelta(days=1, hours=2)))
    return steady, congested, short


async def test_report_numbers_equal_sql_on_the_raw_rows(
    seeded, conn, pool, make_settings, tmp_path
):
    settings = make_settings(reports_dir=tmp_path / "reports")
    assert await reports.write_day(settings, pool, DAY) == 3
    stored = await conn.fetch("SELECT stream_id, summary FROM stream_reports")
    rows = {r["stream_id"]: json.loads(r["summary"]) for r in stored}
    assert set(rows) == set(seeded)
    for stream in seeded:
        summary = rows[stream]
        expected = dict(await conn.fetchrow(EXPECTED, stream, START))
        expected.update(await conn.fetchrow(APPROXIMATED, stream, START))
        for field, value in expected.items():
            assert summary[field] == pytest.approx(float(value), rel=1e-9), field
        assert summary["fair_share"] == pytest.approx(0)

    steady, congested, _ = seeded
    assert rows[congested]["alerts_packet_loss_high"] == 1
    assert rows[congested]["alerts_fps_low"] == 1
    assert rows[congested]["drop_episodes"] == 1
    assert rows[congested]["drop_seconds"] == 23 * 60
    assert rows[steady]["drop_episodes"] == 0 and rows[steady]["alerts_fps_low"] == 0
    advice = await conn.fetch(
        "SELECT stream_id, action, count(*) FROM stream_advice WHERE issued_at >= $1 "
        "AND issued_at < $1 + interval '1 day' GROUP BY 1, 2",
        START,
    )
    for stream in seeded:
        counts = {r["action"]: r["count"] for r in advice if r["stream_id"] == stream}
        assert rows[stream]["advice_lower"] == counts.get("lower", 0)
        assert rows[stream]["advice_raise"] == counts.get("raise", 0)
    page = (settings.reports_dir / DAY.isoformat() / f"{congested}.html").read_text()
    assert "1,200 kbps · 1280×720 · 24 fps" in page and "packet loss, latency building up" in page
    assert "900 kbps" not in page  # the advice of the day before


async def test_report_files_worst_first_and_a_rerun_replaces_them(
    seeded, conn, pool, make_settings, tmp_path
):
    steady, congested, short = seeded
    settings = make_settings(reports_dir=tmp_path / "reports")
    await reports.write_day(settings, pool, DAY)
    folder = tmp_path / "reports" / DAY.isoformat()
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{s}.html" for s in seeded] + ["index.html", "summary.csv"]
    )
    table = list(csv.DictReader(io.StringIO((folder / "summary.csv").read_text())))
    assert table[0]["stream_id"] == str(congested)
    assert {r["stream_id"] for r in table} == {str(s) for s in seeded}
    index = (folder / "index.html").read_text()
    links = re.findall(r'href="([0-9a-f-]{36})\.html"', index)
    assert links[0] == str(congested) and sorted(links) == sorted(str(s) for s in seeded)

    # Re-running the day: stale files vanish, rows are replaced, not added.
    (folder / "stale.html").write_text("old")
    await conn.execute("DELETE FROM stream_stats WHERE stream_id = $1", short)
    await rollups.run(JobContext(make_settings(), pool, START + timedelta(days=1, hours=3)))
    assert await reports.write_day(settings, pool, DAY) == 2
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{steady}.html", f"{congested}.html", "index.html", "summary.csv"]
    )
    assert await conn.fetchval("SELECT count(*) FROM stream_reports") == 2
    assert not list((tmp_path / "reports").glob(".*"))

    # One stream on its own: its row and page are rewritten, the index keeps every stream.
    before = (folder / f"{congested}.html").stat().st_mtime_ns
    assert await reports.write_day(settings, pool, DAY, [steady]) == 1
    assert (folder / f"{congested}.html").stat().st_mtime_ns == before
    assert len(list(csv.DictReader(io.StringIO((folder / "summary.csv").read_text())))) == 2


async def test_a_day_read_one_stream_and_one_row_at_a_time_gives_the_same_reports(
    seeded, conn, pool, make_settings, tmp_path, monkeypatch
):
    # The day is read a keyset page of streams at a time, each page's episodes along with it,
    # and the index from its rows a few at a time: the smallest batches must not lose, move or
    # repeat an episode or a row.
    written = {}
    for batch in (reports.READ_BATCH, 1):
        monkeypatch.setattr(reports, "READ_BATCH", batch)
        monkeypatch.setattr(reports, "FETCH_ROWS", batch)
        settings = make_settings(reports_dir=tmp_path / str(batch))
        assert await reports.write_day(settings, pool, DAY) == 3
        rows = await conn.fetch("SELECT stream_id, summary, path FROM stream_reports ORDER BY 1")
        folder = settings.reports_dir / DAY.isoformat()
        written[batch] = [tuple(r) for r in rows], {p.name: p.read_text() for p in folder.iterdir()}
    assert written[1] == written[reports.READ_BATCH]
    _, congested, _ = seeded
    summary = {r[0]: json.loads(r[1]) for r in written[1][0]}[congested]
    assert summary["alerts_fps_low"] == summary["drop_episodes"] == summary["advice_raise"] == 1


async def test_a_day_run_holds_no_transaction_open_while_its_pages_are_built(
    seeded, conn, database_url, make_settings, monkeypatch
):
    # A transaction open for the whole run would hold back vacuum and `streamstats migrate` for
    # as long as a large day takes: between its reads and writes, the run's connection is idle.
    name = f"report-run-{uuid.uuid4()}"
    build = reports._write_page

    def slow_page(*args):
        time.sleep(0.2)
        return build(*args)

    write_index = reports._write_index
    indexing = asyncio.Event()

    async def flagged_index(*args):
        indexing.set()
        await write_index(*args)

    monkeypatch.setattr(reports, "_write_page", slow_page)
    monkeypatch.setattr(reports, "_write_index", flagged_index)
    monkeypatch.setattr(reports, "READ_BATCH", 1)
    run_pool = await create_pool(
        database_url, max_size=1, server_settings={"application_name": name}
    )
    try:
        run = asyncio.create_task(reports.write_day(make_settings(), run_pool, DAY))
        states = []
        # Until the index step, whose cursor has a (short) transaction of its own.
        while not indexing.is_set() and not run.done():
            states += await conn.fetch(
                "SELECT state, now() - xact_start AS open_for FROM pg_stat_activity "
                "WHERE application_name = $1",
                name,
            )
            await asyncio.sleep(0.05)
        assert await run == 3
    finally:
        await run_pool.close()
    assert len(states) >= 5
    assert [s for s in states if s["state"] == "idle in transaction"] == []
    assert [s for s in states if s["open_for"] and s["open_for"] > timedelta(seconds=0.5)] == []


async def test_runs_of_the_same_day_take_turns(seeded, database_url, make_settings, monkeypatch):
    # Serialized by an advisory lock on the day: the second run's pages come after the first's.
    build = reports._write_page
    pages: dict[str, list[float]] = {"a": [], "b": []}

    def timed_page(d, path, dashboard_url):
        summary = build(d, path, dashboard_url)
        pages[path.parent.parent.name].append(time.monotonic())
        time.sleep(0.05)
        return summary

    monkeypatch.setattr(reports, "_write_page", timed_page)
    two = await create_pool(database_url, max_size=2)
    try:
        settings = {
            run: make_settings(reports_dir=make_settings().reports_dir / run) for run in pages
        }
        runs = [reports.write_day(s, two, DAY) for s in settings.values()]
        assert await asyncio.gather(*runs) == [3, 3]
    finally:
        await two.close()
    first, second = sorted(pages.values())
    assert max(first) < min(second)
    for s in settings.values():
        folder = s.reports_dir / DAY.isoformat()
        assert len(list(folder.iterdir())) == 5 and not list(s.reports_dir.rglob(".*"))


async def test_a_failed_day_run_leaves_the_rows_and_files_as_they_were(
    seeded, conn, pool, make_settings, monkeypatch
):
    settings = make_settings()
    assert await reports.write_day(settings, pool, DAY) == 3
    rows = await conn.fetch("SELECT * FROM stream_reports ORDER BY stream_id")
    folder = settings.reports_dir / DAY.isoformat()
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    build, calls = reports._write_page, []

    def failing_page(*args):
        calls.append(args)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return build(*args)

    monkeypatch.setattr(reports, "_write_page", failing_page)
    for streams in (None, list(seeded)):
        calls.clear()
        with pytest.raises(RuntimeError, match="disk full"):
            await reports.write_day(settings, pool, DAY, streams)
        assert await conn.fetch("SELECT * FROM stream_reports ORDER BY stream_id") == rows
        assert {p.name for p in folder.iterdir()} == set(files)
    assert [p.name for p in settings.reports_dir.iterdir()] == [DAY.isoformat()]


async def test_the_daily_job_reports_the_previous_utc_day(seeded, pool, make_settings):
    settings = make_settings()
    ctx = JobContext(settings, pool, START + timedelta(days=1, minutes=15))
    assert await reports.run_daily(ctx) == 3
    assert (settings.reports_dir / DAY.isoformat() / "index.html").exists()


async def test_days_missed_while_the_runner_was_down_are_written_on_its_next_run(
    seeded, conn, pool, make_settings, tmp_path
):
    settings = make_settings(reports_dir=tmp_path / "reports")
    later = uuid.uuid4()
    for offset in (1, 2):
        noon = START + timedelta(days=offset, hours=12)
        await conn.executemany(
            "INSERT INTO stream_stats (time, stream_id, bitrate_kbps, fps, quality) "
            "VALUES ($1, $2, 2000, 30, 'good')",
            [(noon + timedelta(seconds=10 * i), later) for i in range(30)],
        )
    await rollups.run(JobContext(settings, pool, START + timedelta(days=3, minutes=10)))

    def at(days: int, minutes: int = 15) -> JobContext:
        return JobContext(settings, pool, START + timedelta(days=days, minutes=minutes))

    assert await reports.run_daily(at(1)) == 3
    # The runner is down over the next 00:15; the one after writes both days it has not (the
    # seeded streams have one sample each just after DAY, so DAY + 1 has four streams).
    assert await reports.run_daily(at(3)) == 5
    written = await conn.fetch("SELECT day, count(*) FROM stream_reports GROUP BY day ORDER BY 1")
    assert [(r["day"], r["count"]) for r in written] == [
        (DAY, 3),
        (DAY + timedelta(days=1), 4),
        (DAY + timedelta(days=2), 1),
    ]
    assert (settings.reports_dir / (DAY + timedelta(days=1)).isoformat() / "index.html").exists()
    # Already written days are not written again.
    assert await reports.days_to_report(at(3, 20)) == []
    assert await reports.run_daily(at(3, 20)) == 0


async def test_catching_up_reaches_back_no_further_than_the_minute_rollups_are_kept(
    seeded, pool, make_settings
):
    settings = make_settings(rollup_1m_retention=timedelta(days=5))
    ctx = JobContext(settings, pool, START + timedelta(days=30, minutes=15))
    await reports.run_daily(JobContext(settings, pool, START + timedelta(days=1, minutes=15)))
    assert await reports.days_to_report(ctx) == [DAY + timedelta(days=n) for n in range(26, 30)]


async def test_on_an_empty_table_the_daily_job_writes_only_yesterday(seeded, pool, make_settings):
    ctx = JobContext(make_settings(), pool, START + timedelta(days=9, minutes=15))
    assert await reports.days_to_report(ctx) == [DAY + timedelta(days=8)]


def browse(out: Path, *pages: Path) -> list[dict]:
    """What headless Chromium shows of `pages` (tests/js/report-page.js); screenshots in `out`."""
    node = shutil.which("node")
    assert node and (JS / "node_modules" / "playwright-core").is_dir(), (
        "needs Node.js and `npm ci` in tests/js (scripts/setup.sh does both)"
    )
    assert Path("/usr/bin/chromium").exists(), "needs Debian's chromium (scripts/setup.sh)"
    result = subprocess.run(
        [node, str(JS / "report-page.js"), str(out), *(p.as_uri() for p in pages)],
        capture_output=True, text=True, timeout=120, cwd=JS,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


@pytest.mark.slow
async def test_a_stream_page_draws_its_charts_on_the_live_hours_and_zooms(
    seeded, pool, make_settings, tmp_path
):
    settings = make_settings(reports_dir=tmp_path / "reports")
    await reports.write_day(settings, pool, DAY)
    await reports.write_week(settings, pool, DAY)
    _, congested, short = seeded
    folder = tmp_path / "reports" / DAY.isoformat()
    text = (folder / f"{congested}.html").read_text()
    # Self-contained: the chart library is inside, nothing is loaded from anywhere.
    assert "<script src" not in text and "<link" not in text and "uPlot" in text

    shots = tmp_path / "shots"
    shots.mkdir()
    week = tmp_path / "reports" / "2026-W10" / "index.html"
    page, short_page, index, weekly = await asyncio.to_thread(
        browse,
        shots,
        folder / f"{congested}.html",
        folder / f"{short}.html",
        folder / "index.html",
        week,
    )
    for seen in (page, short_page):
        assert seen["errors"] == [] and seen["requests"] == []
        assert seen["slots"] == 3 and len(seen["canvases"]) == 3
        # Every chart drew its data: coloured pixels, which vanish with its series hidden.
        for canvas in seen["canvases"]:
            assert canvas["drawn"] > 2000 and canvas["blank"] < 50, canvas
    # The seeded streams were live from 06:00, for 3 hours and for half an hour.
    six = START.timestamp() + 6 * 3600
    assert page["opened"] == [[six, six + 3 * 3600]] * 3
    assert short_page["opened"] == [[six, six + 3600]] * 3
    assert page["visible"] == "06:00 – 09:00 UTC"
    # The congested stream's advice adds the advised bitrate to its first chart.
    assert [len(s) for s in page["series"]] == [6, 5, 4]
    assert page["series"][0][-1] == "advised bitrate"
    assert [len(s) for s in short_page["series"]] == [5, 5, 4]
    # Dragging across the middle third of a chart zooms every chart to that part.
    (low, high), *others = page["dragged"]
    assert six + 3600 - 300 < low < six + 3600 + 300 and six + 7200 - 300 < high < six + 7200 + 300
    assert others == [[low, high]] * 2
    day = START.timestamp()
    assert page["set"] == [[day + 3600, day + 7200]] * 3
    assert page["back"] == page["opened"]

    assert index["errors"] == [] and index["requests"] == []
    links = index["links"]
    assert links[: links.index(f"{congested}.html")].count(f"{short}.html") == 0
    for stream in seeded:
        assert f"{stream}.html" in links
        assert f"{settings.dashboard_url}#stream={stream}" in links
    for link in links:
        if link.endswith(".html") and not link.startswith("http"):
            assert (folder / link).resolve().exists(), link
    assert (folder / "summary.csv").exists() and "summary.csv" in links

    assert weekly["errors"] == [] and weekly["requests"] == []
    assert len(weekly["canvases"]) == 2
    for canvas in weekly["canvases"]:
        assert canvas["drawn"] > 200 and canvas["blank"] < 50, canvas
    assert weekly["opened"] == [[START.timestamp(), START.timestamp() + 7 * 86400]] * 2
    for link in weekly["links"]:
        if not link.startswith("http"):
            assert (week.parent / link).resolve().exists(), link
    assert f"../{DAY.isoformat()}/{congested}.html" in weekly["links"]


WEEK_STREAMS = """
SELECT stream_id::text, count(DISTINCT (time AT TIME ZONE 'UTC')::date) AS days_live,
       count(*) AS samples, avg(bitrate_kbps) AS bitrate_kbps_avg, avg(fps) AS fps_avg,
       avg(packet_loss_pct) AS packet_loss_pct_avg,
       avg((quality = 'good')::int) AS good_share, avg((quality = 'fair')::int) AS fair_share,
       avg((quality = 'poor')::int) AS poor_share
FROM stream_stats
WHERE time >= $1 AND time < $1 + interval '7 days'
GROUP BY stream_id
"""

WEEK_PLATFORM = """
SELECT (time AT TIME ZONE 'UTC')::date::text AS day, count(DISTINCT stream_id) AS streams,
       count(*) AS samples, avg(bitrate_kbps) AS bitrate_kbps_avg,
       avg((quality = 'good')::int) AS good_share, avg((quality = 'poor')::int) AS poor_share
FROM stream_stats
WHERE time >= $1 AND time < $1 + interval '7 days'
GROUP BY 1
"""


async def test_weekly_report_numbers_equal_sql_on_the_raw_rows(conn, pool, make_settings, tmp_path):
    # The ISO week 2026-W10 is DAY (a Monday) to 2026-03-08; W09 is the week before.
    monday = START
    a, b, gone = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await seed(conn, a, hours=0.5, day=DAY)
    await seed(conn, a, hours=0.3, poor_from=50, day=DAY + timedelta(days=2))
    await seed(conn, a, hours=0.4, day=DAY - timedelta(days=3))
    await seed(conn, b, hours=0.2, poor_from=0, day=DAY + timedelta(days=6))
    await seed(conn, gone, hours=0.2, day=DAY - timedelta(days=6))
    await conn.execute(
        "INSERT INTO bitrate_drops (stream_id, started_at, ended_at, baseline_kbps, "
        "observed_kbps, drop_pct) VALUES ($1, $2, $3, 2500, 700, 72), ($1, $4, $4, 2500, 700, 72)",
        a,
        monday + timedelta(days=2, hours=6, minutes=5),
        monday + timedelta(days=2, hours=6, minutes=9),
        monday - timedelta(days=3, hours=-6),
    )
    await conn.execute(
        "INSERT INTO stream_alerts (stream_id, type, value, threshold, raised_at, cleared_at) "
        "VALUES ($1, 'packet_loss_high', 7, 5, $2, NULL)",
        b,
        monday + timedelta(days=6, hours=6, minutes=1),
    )
    await rollups.run(JobContext(make_settings(), pool, monday + timedelta(days=8)))
    settings = make_settings(reports_dir=tmp_path / "reports")
    folder = await reports.write_week(settings, pool, DAY)
    assert folder == tmp_path / "reports" / "2026-W10"
    assert sorted(p.name for p in folder.iterdir()) == ["index.html", "platform.csv", "summary.csv"]

    table = list(csv.DictReader(io.StringIO((folder / "summary.csv").read_text())))
    # Worst first: b was poor all along; the stream seen only the week before is not listed.
    assert [r["stream_id"] for r in table] == [str(b), str(a)]
    got = {r["stream_id"]: r for r in table}
    for row in await conn.fetch(WEEK_STREAMS, monday):
        for field, value in dict(row).items():
            if field != "stream_id":
                assert float(got[row["stream_id"]][field]) == pytest.approx(float(value)), field
    before = {r["stream_id"]: r for r in await conn.fetch(WEEK_STREAMS, monday - timedelta(7))}
    assert float(got[str(a)]["previous_samples"]) == before[str(a)]["samples"]
    assert float(got[str(a)]["previous_bitrate_kbps_avg"]) == pytest.approx(
        before[str(a)]["bitrate_kbps_avg"]
    )
    assert got[str(b)]["previous_samples"] == "0" and got[str(b)]["previous_poor_share"] == ""
    assert (got[str(a)]["drop_episodes"], got[str(a)]["alerts"]) == ("1", "0")
    assert (got[str(b)]["drop_episodes"], got[str(b)]["alerts"]) == ("0", "1")

    platform = list(csv.DictReader(io.StringIO((folder / "platform.csv").read_text())))
    assert [r["day"] for r in platform] == [(DAY + timedelta(n)).isoformat() for n in range(7)]
    days = {r["day"]: r for r in platform}
    expected = {r["day"]: r for r in await conn.fetch(WEEK_PLATFORM, monday)}
    for day, row in days.items():
        if day not in expected:
            assert (row["streams"], row["samples"], row["good_share"]) == ("0", "0", "")
            continue
        for field, value in dict(expected[day]).items():
            if field != "day":
                assert float(row[field]) == pytest.approx(float(value)), (day, field)
    # The samples just outside each seeded day count on the days before and after it.
    assert set(expected) == {(DAY + timedelta(n)).isoformat() for n in (0, 1, 2, 3, 5, 6)}


async def test_the_daily_job_writes_the_week_of_each_day_it_reports(seeded, pool, make_settings):
    settings = make_settings()
    await reports.run_daily(JobContext(settings, pool, START + timedelta(days=1, minutes=15)))
    week = settings.reports_dir / "2026-W10"
    assert (week / "index.html").exists()
    table = list(csv.DictReader(io.StringIO((week / "summary.csv").read_text())))
    assert {r["stream_id"] for r in table} == {str(s) for s in seeded}


async def test_the_day_page_shows_the_viewer_experience_of_the_day(
    conn, pool, make_settings, tmp_path
):
    stream, quiet = uuid.uuid4(), uuid.uuid4()
    await seed(conn, stream, hours=1)
    await seed(conn, quiet, hours=1)
    writer = BatchWriter(make_settings(batch_ms=20), pool, target=BEACONS)
    await writer.start()
    try:
        t = START + timedelta(hours=6, minutes=10)
        for view, stalls, stall_ms in ((uuid.uuid4(), 0, 0.0), (uuid.uuid4(), 2, 3000.0)):
            beacons = [
                BeaconRow(t, view, stream, "starting", None, 0.0, 0, 0.0, 0, 0, None, None, None,
                          None, None),
                BeaconRow(t + timedelta(seconds=10), view, stream, "playing", 800.0, 9200.0 -
                          stall_ms, stalls, stall_ms, 0, 1, 2500.0, 1280, 720, None, None),
            ]  # fmt: skip
            for beacon in beacons:
                await writer.submit(beacon)
    finally:
        await writer.close()
    settings = make_settings(reports_dir=tmp_path / "reports")
    await reports.write_day(settings, pool, DAY)
    rows = {
        r["stream_id"]: json.loads(r["summary"])
        for r in await conn.fetch("SELECT stream_id, summary FROM stream_reports")
    }
    day = await conn.fetchrow(
        "SELECT views, score, rebuffer_pct, startup_ms_p50, failure_pct FROM viewer_experience_1d "
        "WHERE stream_id = $1 AND bucket = $2",
        stream,
        START,
    )
    assert day["views"] == 2 and day["rebuffer_pct"] > 0
    summary = rows[stream]
    assert summary["viewer_views"] == 2
    assert summary["viewer_score"] == pytest.approx(day["score"])
    assert summary["viewer_rebuffer_pct"] == pytest.approx(day["rebuffer_pct"])
    assert summary["viewer_startup_ms_p50"] == pytest.approx(day["startup_ms_p50"])
    assert rows[quiet]["viewer_views"] == 0 and rows[quiet]["viewer_score"] is None
    page = (settings.reports_dir / DAY.isoformat() / f"{stream}.html").read_text()
    assert "Viewer experience" in page and f"{day['score']:,.1f} / 100" in page
    quiet_page = (settings.reports_dir / DAY.isoformat() / f"{quiet}.html").read_text()
    assert "No viewer reported playback this day." in quiet_page
