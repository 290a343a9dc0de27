-- Named queries of the daily reports (jobs/reports.py): read from the rollup views.

-- report_day_streams --
-- How many streams have data on the day $1 ($2 NULL) or how many of the given streams do.
SELECT count(*)
FROM stream_stats_1d
WHERE bucket = $1 AND ($2::uuid[] IS NULL OR stream_id = ANY($2::uuid[]))

-- report_days --
-- The day rollups of the next $4 streams after $3 (from the first when NULL) in stream order,
-- of every stream with data that day ($2 NULL) or of the given streams: one keyset page.
SELECT *
FROM stream_stats_1d
WHERE bucket = $1 AND ($2::uuid[] IS NULL OR stream_id = ANY($2::uuid[]))
  AND ($3::uuid IS NULL OR stream_id > $3::uuid)
ORDER BY stream_id
LIMIT $4

-- report_minutes --
-- The 1-minute rollups of the streams $1 over [$2, $3), every column a float8 with NaN for NULL
-- (read as one binary COPY), in stream and time order: the stream's position in $1 (ordered),
-- epoch seconds, then
-- analytics/report.py's MINUTE_COLUMNS, in that order.
SELECT array_position($1::uuid[], stream_id)::float8, extract(epoch FROM bucket)::float8,
       samples::float8, coalesce(bitrate_kbps_avg, 'NaN'), coalesce(bitrate_kbps_min, 'NaN'),
       coalesce(bitrate_kbps_max, 'NaN'), coalesce(bitrate_kbps_p50, 'NaN'),
       coalesce(fps_avg, 'NaN'), coalesce(packet_loss_pct_avg, 'NaN'),
       coalesce(packet_loss_pct_max, 'NaN'), coalesce(latency_ms_avg, 'NaN'),
       coalesce(latency_ms_p95, 'NaN'), good_samples::float8, fair_samples::float8,
       poor_samples::float8
FROM stream_stats_1m
WHERE stream_id = ANY($1::uuid[]) AND bucket >= $2 AND bucket < $3
ORDER BY stream_id, bucket

-- report_alerts --
-- Threshold alert episodes raised in [start, end) of the streams $3.
SELECT stream_id, type, value, threshold, raised_at, cleared_at
FROM stream_alerts
WHERE raised_at >= $1 AND raised_at < $2 AND stream_id = ANY($3::uuid[])
ORDER BY stream_id, raised_at

-- report_drops --
-- Bitrate drops overlapping [start, end) of the streams $3.
SELECT stream_id, started_at, ended_at, baseline_kbps, observed_kbps, drop_pct
FROM bitrate_drops
WHERE started_at < $2 AND coalesce(ended_at, 'infinity') > $1 AND stream_id = ANY($3::uuid[])
ORDER BY stream_id, started_at

-- report_last_day --
-- The latest day reported up to $1 (NULL when none): the daily job continues after it.
SELECT max(day) FROM stream_reports WHERE day <= $1

-- report_try_lock_day --
-- Take the session advisory lock of the reports of day $1 if nobody holds it; true when taken
-- (one run of a day at a time).
SELECT pg_try_advisory_lock(hashtextextended('streamstats.report:' || $1::date::text, 0))

-- report_unlock_day --
-- Release the session advisory lock of the reports of day $1.
SELECT pg_advisory_unlock(hashtextextended('streamstats.report:' || $1::date::text, 0))

-- report_stage_create --
-- A session temporary table for the rows of the pages a run writes (it outlives transactions,
-- not the connection), empty.
DROP TABLE IF EXISTS pg_temp.report_rows;
CREATE TEMPORARY TABLE report_rows (
    stream_id uuid PRIMARY KEY,
    summary   jsonb NOT NULL,
    path      text NOT NULL
)

-- report_stage_drop --
-- Drop the run's temporary table.
DROP TABLE IF EXISTS pg_temp.report_rows

-- report_stage --
-- Keep the rows of pages written (arrays of stream ids, summaries and paths) until the run ends.
INSERT INTO pg_temp.report_rows (stream_id, summary, path)
SELECT * FROM unnest($1::uuid[], $2::jsonb[], $3::text[])
ON CONFLICT (stream_id) DO UPDATE SET summary = EXCLUDED.summary, path = EXCLUDED.path

-- report_delete_day --
-- Forget a day's reports (all streams when $2 is NULL) before writing them again.
DELETE FROM stream_reports
WHERE day = $1 AND ($2::uuid[] IS NULL OR stream_id = ANY($2::uuid[]))

-- report_insert_staged --
-- Record the reports of day $1 kept in the run's temporary table.
INSERT INTO stream_reports (stream_id, day, summary, path)
SELECT stream_id, $1, summary, path FROM pg_temp.report_rows
ON CONFLICT (stream_id, day) DO UPDATE
    SET summary = EXCLUDED.summary, path = EXCLUDED.path, created_at = now()

-- report_summaries --
-- Every stream's summary of a day, for summary.csv and index.html, read through a cursor, worst
-- first: most time in poor quality, then most time in bitrate drops, then most alerts (then by
-- stream).
SELECT summary FROM stream_reports WHERE day = $1
ORDER BY coalesce((summary->>'poor_share')::float8, 0) DESC,
         (summary->>'drop_seconds')::float8 DESC,
         (summary->>'alerts_packet_loss_high')::int + (summary->>'alerts_fps_low')::int DESC,
         stream_id

-- report_week_streams --
-- Per stream with data in the 14 days from $1 (the week before the reported one, then that
-- week): its day rollups as arrays in day order, and its drops and alerts started in the week.
WITH drops AS (
    SELECT stream_id, count(*) AS n FROM bitrate_drops
    WHERE started_at >= $1::timestamptz + interval '7 days' AND started_at < $1::timestamptz + interval '14 days'
    GROUP BY stream_id
), alerts AS (
    SELECT stream_id, count(*) AS n FROM stream_alerts
    WHERE raised_at >= $1::timestamptz + interval '7 days' AND raised_at < $1::timestamptz + interval '14 days'
    GROUP BY stream_id
)
SELECT d.stream_id,
       array_agg(extract(epoch FROM d.bucket)::float8 ORDER BY d.bucket) AS day,
       array_agg(d.samples::float8 ORDER BY d.bucket) AS samples,
       array_agg(coalesce(d.bitrate_kbps_avg, 'NaN') ORDER BY d.bucket) AS bitrate_kbps_avg,
       array_agg(coalesce(d.fps_avg, 'NaN') ORDER BY d.bucket) AS fps_avg,
       array_agg(coalesce(d.packet_loss_pct_avg, 'NaN') ORDER BY d.bucket) AS packet_loss_pct_avg,
       array_agg(d.good_samples::float8 ORDER BY d.bucket) AS good_samples,
       array_agg(d.fair_samples::float8 ORDER BY d.bucket) AS fair_samples,
       array_agg(d.poor_samples::float8 ORDER BY d.bucket) AS poor_samples,
       coalesce(max(dr.n), 0) AS drop_episodes,
       coalesce(max(al.n), 0) AS alerts
FROM stream_stats_1d d
LEFT JOIN drops dr ON dr.stream_id = d.stream_id
LEFT JOIN alerts al ON al.stream_id = d.stream_id
WHERE d.bucket >= $1::timestamptz AND d.bucket < $1::timestamptz + interval '14 days'
GROUP BY d.stream_id
ORDER BY d.stream_id

-- report_advice --
-- Quality advice issued in [start, end) of the streams $3.
SELECT stream_id, issued_at, action, target, reasons, severity
FROM stream_advice
WHERE issued_at >= $1 AND issued_at < $2 AND stream_id = ANY($3::uuid[])
ORDER BY stream_id, issued_at

-- report_viewer_experience --
-- The day's viewer experience ($1: the day's start) of those of the streams $2 viewers reported
-- for.
SELECT stream_id, views, rebuffer_pct, stalls_per_minute, startup_ms_p50, startup_ms_p95,
       switches_per_view, failure_pct, exit_before_start_pct, score
FROM viewer_experience_1d
WHERE bucket = $1::timestamptz AND stream_id = ANY($2::uuid[])
ORDER BY stream_id
