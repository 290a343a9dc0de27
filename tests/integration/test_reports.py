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
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest

from jobs import reports, rollups
from jobs.base import JobContext
from streamstats.db import create_pool

DAY = date(2026, 3, 2)
START = datetime(2026, 3, 2, tzinfo=UTC)


async def seed(conn, stream: uuid.UUID, *, hours: float, poor_from: int | None = None) -> None:
    """Samples every 10 s from 06:00 for `hours`; poor quality from the `poor_from`-th on."""
    rng = random.Random(str(stream))
    rows = []
    for i in range(int(hours * 360)):
        poor = poor_from is not None and i >= poor_from
        bitrate = rng.uniform(600, 900) if poor else rng.uniform(2000, 3000)
        fps = rng.choice([12.0, 18.0]) if poor else rng.choice([29.0, 30.0])
        loss = rng.uniform(4, 9) if poor else rng.uniform(0, 0.8)
        latency = rng.uniform(150, 400) if poor else rng.uniform(20, 90)
        quality = "poor" if poor else "good"
        at = START + timedelta(hours=6, seconds=10 * i)
        rows.append((at, stream, bitrate, fps, loss, latency, quality))
    # A sample just outside the day on either side must not count.
    rows.append((START - timedelta(seconds=1), stream, 1.0, 1.0, 50.0, 5000.0, "poor"))
    rows.append((START + timedelta(days=1), stream, 1.0, 1.0, 50.0, 5000.0, "poor"))
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


@pytest.mark.slow
async def test_a_stream_page_renders_in_headless_chromium_with_its_charts(
    seeded, pool, make_settings, tmp_path
):
    chromium = shutil.which("chromium")
    assert chromium, "needs Debian's chromium package (scripts/setup.sh installs it)"
    settings = make_settings(reports_dir=tmp_path / "reports")
    await reports.write_day(settings, pool, DAY)
    _, congested, _ = seeded
    page = (tmp_path / "reports" / DAY.isoformat() / f"{congested}.html").read_text()
    assert "<script" not in page and "http" not in page  # self-contained, nothing fetched
    # Count, in the browser, the images that decoded to a real picture.
    probe = tmp_path / "probe.html"
    probe.write_text(
        page.replace(
            "</body>",
            "<script>addEventListener('load', () => { document.body.dataset.charts = "
            "[...document.images].filter(i => i.complete && i.naturalWidth > 300).length; });"
            "</script></body>",
        )
    )
    result = await asyncio.to_thread(
        subprocess.run,
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
         "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert 'data-charts="3"' in result.stdout, result.stderr[-2000:]
    shot = tmp_path / "page.png"
    await asyncio.to_thread(
        subprocess.run,
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1100,1800",
         f"--screenshot={shot}", probe.as_uri()],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert shot.stat().st_size > 20_000


@pytest.mark.slow
async def test_worker_processes_write_the_same_reports(
    seeded, pool, make_settings, tmp_path, monkeypatch
):
    one = make_settings(reports_dir=tmp_path / "one")
    two = make_settings(reports_dir=tmp_path / "two")
    await reports.write_day(one, pool, DAY)
    monkeypatch.setattr(reports, "PARALLEL_FROM", 1)
    assert await reports.write_day(two, pool, DAY, workers=2) == 3
    for page in (tmp_path / "one" / DAY.isoformat()).iterdir():
        assert page.read_bytes() == (tmp_path / "two" / DAY.isoformat() / page.name).read_bytes()
