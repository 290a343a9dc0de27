-- Named queries of the live dashboard's events (ingest/dashboard.py): history, the live list.

-- dashboard_history_raw --
-- Raw samples of one stream in [from, to], oldest first, at most $4 rows.
SELECT time, bitrate_kbps, fps, width, height, audio_level_db, packet_loss_pct, latency_ms,
       upload_kbps, download_kbps, quality
FROM stream_stats
WHERE stream_id = $1 AND time >= $2 AND time <= $3
ORDER BY time
LIMIT $4

-- dashboard_history_rollup --
-- Buckets of one stream overlapping [from, to] from the rollup view named by $4 ('1m'|'1h'|'1d');
-- the two views not asked for are one-time-filtered away. quality: the band most samples had.
SELECT bucket, samples, bitrate_kbps_avg, bitrate_kbps_min, bitrate_kbps_max, bitrate_kbps_p50,
       bitrate_kbps_p95, fps_avg, fps_min, packet_loss_pct_avg, packet_loss_pct_max,
       latency_ms_avg, latency_ms_p95, latency_ms_max, good_samples, fair_samples, poor_samples,
       CASE
           WHEN poor_samples > 0 AND poor_samples >= greatest(good_samples, fair_samples)
               THEN 'poor'
           WHEN fair_samples > 0 AND fair_samples >= good_samples THEN 'fair'
           WHEN good_samples > 0 THEN 'good'
       END AS quality
FROM (
    SELECT * FROM stream_stats_1m
    WHERE $4::text = '1m' AND stream_id = $1
      AND bucket > $2::timestamptz - interval '1 minute' AND bucket <= $3
    UNION ALL
    SELECT * FROM stream_stats_1h
    WHERE $4::text = '1h' AND stream_id = $1
      AND bucket > $2::timestamptz - interval '1 hour' AND bucket <= $3
    UNION ALL
    SELECT * FROM stream_stats_1d
    WHERE $4::text = '1d' AND stream_id = $1
      AND bucket > $2::timestamptz - interval '1 day' AND bucket <= $3
) buckets
ORDER BY bucket

-- dashboard_alerts_between --
-- Threshold alert episodes of one stream that overlap [from, to], oldest first.
SELECT type, value, threshold, raised_at, cleared_at
FROM stream_alerts
WHERE stream_id = $1 AND raised_at <= $3 AND (cleared_at IS NULL OR cleared_at >= $2)
ORDER BY raised_at, type

-- dashboard_drops_between --
-- Bitrate-drop episodes of one stream that overlap [from, to], oldest first.
SELECT started_at, ended_at, baseline_kbps, observed_kbps, drop_pct
FROM bitrate_drops
WHERE stream_id = $1 AND started_at <= $3 AND (ended_at IS NULL OR ended_at >= $2)
ORDER BY started_at

-- dashboard_advice_between --
-- Quality advice given to one stream in [from, to], oldest first (at most 200).
SELECT id, issued_at, action, target, reasons, severity, basis, applied_at
FROM stream_advice
WHERE stream_id = $1 AND issued_at >= $2 AND issued_at <= $3
ORDER BY issued_at, id
LIMIT 200

-- dashboard_live --
-- The latest row of every stream that reported since $1 ($2: only these streams, NULL = all).
SELECT stream_id, time, bitrate_kbps, fps, width, height, audio_level_db, packet_loss_pct,
       latency_ms, upload_kbps, download_kbps, quality
FROM stream_latest
WHERE time > $1 AND ($2::uuid[] IS NULL OR stream_id = ANY($2::uuid[]))
ORDER BY stream_id

-- dashboard_open_alerts --
-- Open threshold alerts of these streams.
SELECT stream_id, type, value, threshold, raised_at
FROM stream_alerts
WHERE cleared_at IS NULL AND stream_id = ANY($1::uuid[])
ORDER BY stream_id, raised_at

-- dashboard_open_drops --
-- Open bitrate drops of these streams.
SELECT stream_id, started_at, baseline_kbps, observed_kbps, drop_pct
FROM bitrate_drops
WHERE ended_at IS NULL AND stream_id = ANY($1::uuid[])
ORDER BY stream_id, started_at

-- dashboard_sparklines --
-- Mean bitrate per $3-second step since $1 for these streams: the overview's sparklines.
SELECT stream_id, time_bucket(make_interval(secs => $3), time) AS step, avg(bitrate_kbps) AS kbps
FROM stream_stats
WHERE time > $1 AND stream_id = ANY($2::uuid[]) AND bitrate_kbps IS NOT NULL
GROUP BY stream_id, step
ORDER BY stream_id, step

-- dashboard_recent_alerts --
-- The newest alert transitions since $1 of these streams, as stream:alert payload fields:
-- threshold episodes and bitrate drops ($3: the drop start ratio), raised and cleared, at most $4.
SELECT * FROM (
    SELECT stream_id, type, 'raised' AS state, value, threshold, raised_at AS started_at,
           NULL::timestamptz AS ended_at, raised_at AS at
    FROM stream_alerts WHERE raised_at > $1 AND stream_id = ANY($2::uuid[])
    UNION ALL
    SELECT stream_id, type, 'cleared', value, threshold, raised_at, cleared_at, cleared_at
    FROM stream_alerts WHERE cleared_at > $1 AND stream_id = ANY($2::uuid[])
    UNION ALL
    SELECT stream_id, 'bitrate_drop', 'raised', observed_kbps, round((baseline_kbps * $3)::numeric, 3)::float8,
           started_at, NULL, started_at
    FROM bitrate_drops WHERE started_at > $1 AND stream_id = ANY($2::uuid[])
    UNION ALL
    SELECT stream_id, 'bitrate_drop', 'cleared', observed_kbps,
           round((baseline_kbps * $3)::numeric, 3)::float8, started_at, ended_at, ended_at
    FROM bitrate_drops WHERE ended_at > $1 AND stream_id = ANY($2::uuid[])
) transitions
ORDER BY at DESC, stream_id, type
LIMIT $4

-- dashboard_report_days --
-- The days a daily report was written for one stream, newest first.
SELECT day, path, summary
FROM stream_reports
WHERE stream_id = $1
ORDER BY day DESC
LIMIT $2
