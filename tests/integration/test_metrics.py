"""/metrics content that comes from the database: the jobs' last successful runs."""

from __future__ import annotations

from ingest import metrics
from streamstats.db import create_pool


async def test_job_metrics_show_each_jobs_last_success_and_its_duration(conn, database_url):
    await conn.execute(
        """
        INSERT INTO job_runs (job, started_at, finished_at, status) VALUES
          ('rollups', '2026-01-01 10:00:00+00', '2026-01-01 10:00:02+00', 'succeeded'),
          ('rollups', '2026-01-01 10:00:30+00', '2026-01-01 10:00:30.5+00', 'succeeded'),
          ('rollups', '2026-01-01 10:01:00+00', NULL, 'running'),
          ('drops',   '2026-01-01 09:00:00+00', '2026-01-01 09:00:04+00', 'succeeded'),
          ('drops',   '2026-01-01 09:30:00+00', '2026-01-01 09:30:01+00', 'failed'),
          ('reports', '2026-01-01 08:00:00+00', '2026-01-01 08:00:01+00', 'failed')
        """
    )
    pool = await create_pool(database_url, max_size=2)
    try:
        text = (await metrics.render(pool)).decode()
    finally:
        await pool.close()
    lines = set(text.splitlines())
    # 2026-01-01 10:00:30.5 UTC and 09:00:04 UTC as Unix time.
    assert 'streamstats_job_last_success_timestamp_seconds{job="rollups"} 1.7672616305e+09' in lines
    assert 'streamstats_job_duration_seconds{job="rollups"} 0.5' in lines
    assert 'streamstats_job_last_success_timestamp_seconds{job="drops"} 1.767258004e+09' in lines
    assert 'streamstats_job_duration_seconds{job="drops"} 4.0' in lines
    assert 'job="reports"' not in text


async def test_metrics_render_without_a_database():
    text = (await metrics.render(None)).decode()
    assert "streamstats_queue_rows" in text
    assert "streamstats_ack_seconds_bucket" in text
