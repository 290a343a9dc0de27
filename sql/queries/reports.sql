-- Named queries of the daily reports (jobs/reports.py): read from the rollup views.

-- report_days --
-- The day rollup of every stream with data that day ($2 NULL) or of the given streams.
SELECT *
FROM stream_stats_1d
WHERE bucket = $1 AND ($2::uuid[] IS NULL OR stream_id = ANY($2::uuid[]))
ORDER BY stream_id

-- report_minutes --
-- One stream's 1-minute rollups over [start, end).
SELECT *
FROM stream_stats_1m
WHERE stream_id = $1 AND bucket >= $2 AND bucket < $3
ORDER BY bucket

-- report_alerts --
-- Threshold alert episodes raised in [start, end), of every stream.
SELECT stream_id, type, value, threshold, raised_at, cleared_at
FROM stream_alerts
WHERE raised_at >= $1 AND raised_at < $2
ORDER BY stream_id, raised_at

-- report_drops --
-- Bitrate drops overlapping [start, end), of every stream.
SELECT stream_id, started_at, ended_at, baseline_kbps, observed_kbps, drop_pct
FROM bitrate_drops
WHERE started_at < $2 AND coalesce(ended_at, 'infinity') > $1
ORDER BY stream_id, started_at

-- report_last_day --
-- The latest day reported up to $1 (NULL when none): the daily job continues after it.
SELECT max(day) FROM stream_reports WHERE day <= $1

-- report_delete_day --
-- Forget a day's reports (all streams when $2 is NULL) before writing them again.
DELETE FROM stream_reports
WHERE day = $1 AND ($2::uuid[] IS NULL OR stream_id = ANY($2::uuid[]))

-- report_insert --
-- Record the reports written (arrays of stream ids, summaries and paths).
INSERT INTO stream_reports (stream_id, day, summary, path)
SELECT stream_id, $1, summary, path
FROM unnest($2::uuid[], $3::jsonb[], $4::text[]) AS t(stream_id, summary, path)
ON CONFLICT (stream_id, day) DO UPDATE
    SET summary = EXCLUDED.summary, path = EXCLUDED.path, created_at = now()

-- report_summaries --
-- Every stream's summary of a day, for summary.csv and index.html.
SELECT summary FROM stream_reports WHERE day = $1
