"""`streamstats export`: CSV and Parquet files of the rollups, against SQL on the raw rows."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import pandas as pd
import pyarrow.parquet as pq
import pytest

from jobs import rollups
from jobs.base import JobContext
from streamstats import export

START = datetime(2026, 3, 2, tzinfo=UTC)

# Per stream and minute, straight from the raw samples (not from any rollup or view).
EXPECTED_MINUTES = """
SELECT date_trunc('minute', time) AS bucket, stream_id::text AS stream_id, count(*) AS samples,
       avg(bitrate_kbps) AS bitrate_kbps_avg, min(bitrate_kbps) AS bitrate_kbps_min,
       max(bitrate_kbps) AS bitrate_kbps_max,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY bitrate_kbps) AS bitrate_kbps_p50,
       avg(fps) AS fps_avg, avg(packet_loss_pct) AS packet_loss_pct_avg,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS latency_ms_p95,
       count(*) FILTER (WHERE quality = 'good') AS good_samples,
       count(*) FILTER (WHERE quality = 'poor') AS poor_samples
FROM stream_stats
WHERE time >= $1 AND time < $2 AND ($3::uuid[] IS NULL OR stream_id = ANY($3::uuid[]))
GROUP BY 1, 2
ORDER BY 1, 2
"""


@pytest.fixture
async def streams(conn, pool_settings):
    settings, pool = pool_settings
    ids = [uuid.uuid4(), uuid.uuid4()]
    rng = random.Random(7)
    rows = []
    for n, stream in enumerate(ids):
        # 20 minutes around midnight of START (one sample every 7 s), some minutes missing.
        for i in range(170):
            at = START - timedelta(minutes=10) + timedelta(seconds=7 * i + n)
            if at.minute % 6 == 5:
                continue
            quality = "poor" if rng.random() < 0.3 else "good"
            bitrate, fps = rng.uniform(500, 3000), rng.choice([12.0, 30.0])
            loss, latency = rng.uniform(0, 6), rng.uniform(20, 400)
            rows.append((at, stream, bitrate, fps, loss, latency, quality))
    await conn.copy_records_to_table(
        "stream_stats",
        records=rows,
        columns=["time", "stream_id", "bitrate_kbps", "fps", "packet_loss_pct", "latency_ms",
                 "quality"],
    )  # fmt: skip
    # Half the minutes stored by the rollup job, the rest computed live by the view: an export
    # must not care.
    await rollups.run(JobContext(settings, pool, START + timedelta(minutes=1)))
    return ids


@pytest.fixture
async def pool_settings(database_url, make_settings):
    from streamstats.db import create_pool

    pool = await create_pool(database_url, max_size=2)
    yield make_settings(), pool
    await pool.close()


def compare(frame: pd.DataFrame, expected: list) -> None:
    assert len(frame) == len(expected)
    for (_, got), want in zip(frame.iterrows(), expected, strict=True):
        for field, value in dict(want).items():
            if field == "bucket":
                assert pd.Timestamp(got[field]) == pd.Timestamp(value), field
            elif field == "stream_id":
                assert got[field] == value
            else:
                assert float(got[field]) == pytest.approx(float(value), rel=1e-9), field


async def test_csv_and_parquet_exports_equal_sql_on_the_raw_rows(
    streams, conn, pool_settings, tmp_path, monkeypatch
):
    settings, _ = pool_settings
    # Small chunks, so the files are written in several appends / row groups.
    monkeypatch.setattr(export, "CHUNK_ROWS", 7)
    start, end = START - timedelta(minutes=8), START + timedelta(minutes=9)
    expected = await conn.fetch(EXPECTED_MINUTES, start, end, None)
    assert len(expected) > 20

    parquet = tmp_path / "all.parquet"
    request = export.ExportRequest(start, end, "1m", "parquet", parquet)
    assert await export.export(settings, request, progress=False) == len(expected)
    assert pq.ParquetFile(parquet).num_row_groups == -(-len(expected) // 7)
    table = pd.read_parquet(parquet)
    assert str(table["bucket"].dtype) == "datetime64[us, UTC]"
    assert str(table["samples"].dtype) == "int32"
    compare(table, expected)

    one = tmp_path / "one.csv"
    request = export.ExportRequest(start, end, "1m", "csv", one, [streams[1]])
    only = await conn.fetch(EXPECTED_MINUTES, start, end, [streams[1]])
    assert await export.export(settings, request, progress=False) == len(only)
    text = pd.read_csv(one, parse_dates=["bucket"])
    assert list(text.columns) == list(table.columns)
    compare(text, only)
    # The same rows through both formats.
    same = table[table["stream_id"] == str(streams[1])].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        text.drop(columns="bucket"), same.drop(columns="bucket"), check_dtype=False
    )
    assert not list(tmp_path.glob(".*"))


async def test_an_hourly_export_and_an_empty_range(streams, conn, pool_settings, tmp_path):
    settings, _ = pool_settings
    hourly = tmp_path / "hours.parquet"
    request = export.ExportRequest(START - timedelta(hours=1), START + timedelta(hours=1), "1h",
                                   "parquet", hourly)  # fmt: skip
    assert await export.export(settings, request, progress=False) == 4
    table = pd.read_parquet(hourly)
    raw = await conn.fetch(
        "SELECT date_trunc('hour', time) AS bucket, stream_id::text, count(*) AS samples "
        "FROM stream_stats GROUP BY 1, 2 ORDER BY 1, 2"
    )
    assert [(r["bucket"], r["stream_id"], r["samples"]) for r in raw] == [
        (b.to_pydatetime(), s, n) for b, s, n in table[["bucket", "stream_id", "samples"]].values
    ]
    empty = tmp_path / "empty.csv"
    request = export.ExportRequest(START + timedelta(days=5), START + timedelta(days=6), "1d",
                                   "csv", empty)  # fmt: skip
    assert await export.export(settings, request, progress=False) == 0
    assert empty.read_text().startswith("bucket,stream_id,samples,")


def test_the_command_writes_the_file_with_a_progress_bar_and_refuses_bad_ranges(
    database_url, tmp_path
):
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSTATS_")}
    env["DATABASE_URL"] = database_url
    command = [sys.executable, "-m", "streamstats.cli", "export", "--granularity", "1d"]
    done = subprocess.run(
        [*command, "--from", "2026-03-01", "--to", "2026-03-03", "--format", "csv"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "export 1d" in done.stderr and "2.0/2.0" in done.stderr  # the progress bar
    assert (tmp_path / "stream_stats_1d_2026-03-01_2026-03-03.csv").exists()
    assert "rows of stream_stats_1d in stream_stats_1d_2026-03-01_2026-03-03.csv" in done.stdout

    for args, message in (
        (["--from", "2026-03-03", "--to", "2026-03-01"], "must be before --to"),
        (["--from", "yesterday", "--to", "2026-03-01"], "not a date or ISO 8601 time"),
        (["--from", "2026-03-01", "--to", "2026-03-02", "--stream", "x"], "not a stream id"),
    ):
        done = subprocess.run(
            [*command, *args, "-o", "bad.csv"], cwd=tmp_path, env=env, capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert not (tmp_path / "bad.csv").exists()


async def test_a_failed_export_leaves_no_file(streams, pool_settings, tmp_path, monkeypatch):
    settings, _ = pool_settings
    monkeypatch.setattr(export, "CHUNK_ROWS", 5)
    calls = []

    def failing(rows, schema):
        # The second chunk fails, after the first was written to the partial file.
        calls.append(len(rows))
        if len(calls) == 2:
            raise OSError("disk full")
        return real(rows, schema)

    real = export.frame
    monkeypatch.setattr(export, "frame", failing)
    target = tmp_path / "x.parquet"
    request = export.ExportRequest(START - timedelta(hours=1), START + timedelta(hours=1), "1m",
                                   "parquet", target)  # fmt: skip
    with pytest.raises(OSError, match="disk full"):
        await export.export(settings, request, progress=False)
    assert calls == [5, 5]
    assert list(tmp_path.iterdir()) == []
