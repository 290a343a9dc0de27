-- Rollup refresh (jobs/rollups.py) and rollup state. All refresh steps run in one transaction
-- under the `rollups` job lock. A step claims log entries, then recomputes their buckets from raw
-- rows in a later statement: whatever it claimed was committed, so its rows are visible then; a
-- writer that commits in between still has its own log entries, unclaimed, and the next refresh
-- recomputes its buckets again. Nothing committed is ever left out.

-- rollups_lock --
-- Wait for the rollups job's advisory lock until the end of the transaction (retention uses it).
SELECT pg_advisory_xact_lock(hashtextextended('streamstats.job:rollups', 0))

-- rollups_keys_table --
-- The buckets one refresh step recomputes; a table, so the planner knows how many there are.
CREATE TEMP TABLE IF NOT EXISTS rollup_refresh_keys (
    stream_id uuid        NOT NULL,
    bucket    timestamptz NOT NULL
) ON COMMIT DELETE ROWS

-- rollups_keys_clear --
-- Empty the key table between the steps of one refresh.
TRUNCATE rollup_refresh_keys

-- rollups_keys_analyze --
-- Tell the planner the key count: index probes for a few keys, a hash join for a backfill.
ANALYZE rollup_refresh_keys

-- rollups_claim_minutes --
-- Consume the log entries of complete minutes ($1 = now) into the key table.
WITH claimed AS (
    DELETE FROM rollup_invalidations
    WHERE minute <= $1::timestamptz - interval '1 minute'
    RETURNING stream_id, minute
)
INSERT INTO rollup_refresh_keys (stream_id, bucket)
SELECT DISTINCT stream_id, minute FROM claimed

-- rollups_claim_hours --
-- Consume the queued hours that are complete ($1 = now) into the key table.
WITH claimed AS (
    DELETE FROM rollup_pending
    WHERE granularity = '1h' AND bucket <= $1::timestamptz - interval '1 hour'
    RETURNING stream_id, bucket
)
INSERT INTO rollup_refresh_keys (stream_id, bucket)
SELECT stream_id, bucket FROM claimed

-- rollups_claim_days --
-- Consume the queued UTC days that are complete ($1 = now) into the key table.
WITH claimed AS (
    DELETE FROM rollup_pending
    WHERE granularity = '1d' AND bucket <= $1::timestamptz - interval '1 day'
    RETURNING stream_id, bucket
)
INSERT INTO rollup_refresh_keys (stream_id, bucket)
SELECT stream_id, bucket FROM claimed

-- rollups_recompute_1m --
-- Recompute the claimed minutes from raw rows and queue their hours and days.
WITH fresh AS (
    SELECT k.bucket, k.stream_id, count(*)::integer AS samples,
           avg(r.bitrate_kbps) AS bitrate_kbps_avg,
           min(r.bitrate_kbps) AS bitrate_kbps_min,
           max(r.bitrate_kbps) AS bitrate_kbps_max,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY r.bitrate_kbps) AS bitrate_kbps_p50,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY r.bitrate_kbps) AS bitrate_kbps_p95,
           avg(r.fps) AS fps_avg, min(r.fps) AS fps_min,
           avg(r.packet_loss_pct) AS packet_loss_pct_avg,
           max(r.packet_loss_pct) AS packet_loss_pct_max,
           avg(r.latency_ms) AS latency_ms_avg,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY r.latency_ms) AS latency_ms_p95,
           max(r.latency_ms) AS latency_ms_max,
           (count(*) FILTER (WHERE r.quality = 'good'))::integer AS good_samples,
           (count(*) FILTER (WHERE r.quality = 'fair'))::integer AS fair_samples,
           (count(*) FILTER (WHERE r.quality = 'poor'))::integer AS poor_samples
    FROM rollup_refresh_keys k
    JOIN stream_stats r
      ON r.stream_id = k.stream_id
     AND r.time >= k.bucket AND r.time < k.bucket + interval '1 minute'
     -- Redundant with the range, but an equality: a backfill-sized key set can then be
     -- hash-joined instead of merge-joined per stream, which compares every row with every key.
     AND time_bucket('1 minute', r.time) = k.bucket
    GROUP BY k.bucket, k.stream_id
),
emptied AS (
    -- Buckets whose raw rows were all deleted lose their rollup row.
    DELETE FROM rollup_1m m USING rollup_refresh_keys k
    WHERE m.stream_id = k.stream_id AND m.bucket = k.bucket
      AND NOT EXISTS (SELECT 1 FROM fresh f WHERE f.stream_id = k.stream_id AND f.bucket = k.bucket)
    RETURNING 1
),
upserted AS (
    INSERT INTO rollup_1m SELECT * FROM fresh
    ON CONFLICT (stream_id, bucket) DO UPDATE SET
        samples = EXCLUDED.samples,
        bitrate_kbps_avg = EXCLUDED.bitrate_kbps_avg,
        bitrate_kbps_min = EXCLUDED.bitrate_kbps_min,
        bitrate_kbps_max = EXCLUDED.bitrate_kbps_max,
        bitrate_kbps_p50 = EXCLUDED.bitrate_kbps_p50,
        bitrate_kbps_p95 = EXCLUDED.bitrate_kbps_p95,
        fps_avg = EXCLUDED.fps_avg,
        fps_min = EXCLUDED.fps_min,
        packet_loss_pct_avg = EXCLUDED.packet_loss_pct_avg,
        packet_loss_pct_max = EXCLUDED.packet_loss_pct_max,
        latency_ms_avg = EXCLUDED.latency_ms_avg,
        latency_ms_p95 = EXCLUDED.latency_ms_p95,
        latency_ms_max = EXCLUDED.latency_ms_max,
        good_samples = EXCLUDED.good_samples,
        fair_samples = EXCLUDED.fair_samples,
        poor_samples = EXCLUDED.poor_samples
    RETURNING 1
),
queued AS (
    -- Their hours and days, recomputed once complete.
    INSERT INTO rollup_pending (granularity, stream_id, bucket)
    SELECT DISTINCT '1h', stream_id, time_bucket('1 hour', bucket) FROM rollup_refresh_keys
    UNION
    SELECT DISTINCT '1d', stream_id, time_bucket('1 day', bucket) FROM rollup_refresh_keys
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM upserted) + (SELECT count(*) FROM emptied) AS rows,
       (SELECT count(*) FROM rollup_refresh_keys) AS buckets,
       (SELECT count(*) FROM queued) AS queued

-- rollups_recompute_1h --
-- Recompute the claimed hours from raw rows (percentiles do not compose from minutes).
WITH fresh AS (
    SELECT k.bucket, k.stream_id, count(*)::integer AS samples,
           avg(r.bitrate_kbps) AS bitrate_kbps_avg,
           min(r.bitrate_kbps) AS bitrate_kbps_min,
           max(r.bitrate_kbps) AS bitrate_kbps_max,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY r.bitrate_kbps) AS bitrate_kbps_p50,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY r.bitrate_kbps) AS bitrate_kbps_p95,
           avg(r.fps) AS fps_avg, min(r.fps) AS fps_min,
           avg(r.packet_loss_pct) AS packet_loss_pct_avg,
           max(r.packet_loss_pct) AS packet_loss_pct_max,
           avg(r.latency_ms) AS latency_ms_avg,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY r.latency_ms) AS latency_ms_p95,
           max(r.latency_ms) AS latency_ms_max,
           (count(*) FILTER (WHERE r.quality = 'good'))::integer AS good_samples,
           (count(*) FILTER (WHERE r.quality = 'fair'))::integer AS fair_samples,
           (count(*) FILTER (WHERE r.quality = 'poor'))::integer AS poor_samples
    FROM rollup_refresh_keys k
    JOIN stream_stats r
      ON r.stream_id = k.stream_id
     AND r.time >= k.bucket AND r.time < k.bucket + interval '1 hour'
     -- Redundant with the range, but an equality: a backfill-sized key set can then be
     -- hash-joined instead of merge-joined per stream, which compares every row with every key.
     AND time_bucket('1 hour', r.time) = k.bucket
    GROUP BY k.bucket, k.stream_id
),
emptied AS (
    -- Buckets whose raw rows were all deleted lose their rollup row.
    DELETE FROM rollup_1h m USING rollup_refresh_keys k
    WHERE m.stream_id = k.stream_id AND m.bucket = k.bucket
      AND NOT EXISTS (SELECT 1 FROM fresh f WHERE f.stream_id = k.stream_id AND f.bucket = k.bucket)
    RETURNING 1
),
upserted AS (
    INSERT INTO rollup_1h SELECT * FROM fresh
    ON CONFLICT (stream_id, bucket) DO UPDATE SET
        samples = EXCLUDED.samples,
        bitrate_kbps_avg = EXCLUDED.bitrate_kbps_avg,
        bitrate_kbps_min = EXCLUDED.bitrate_kbps_min,
        bitrate_kbps_max = EXCLUDED.bitrate_kbps_max,
        bitrate_kbps_p50 = EXCLUDED.bitrate_kbps_p50,
        bitrate_kbps_p95 = EXCLUDED.bitrate_kbps_p95,
        fps_avg = EXCLUDED.fps_avg,
        fps_min = EXCLUDED.fps_min,
        packet_loss_pct_avg = EXCLUDED.packet_loss_pct_avg,
        packet_loss_pct_max = EXCLUDED.packet_loss_pct_max,
        latency_ms_avg = EXCLUDED.latency_ms_avg,
        latency_ms_p95 = EXCLUDED.latency_ms_p95,
        latency_ms_max = EXCLUDED.latency_ms_max,
        good_samples = EXCLUDED.good_samples,
        fair_samples = EXCLUDED.fair_samples,
        poor_samples = EXCLUDED.poor_samples
    RETURNING 1
)
SELECT (SELECT count(*) FROM upserted) + (SELECT count(*) FROM emptied) AS rows,
       (SELECT count(*) FROM rollup_refresh_keys) AS buckets

-- rollups_recompute_1d --
-- Recompute the claimed days from raw rows.
WITH fresh AS (
    SELECT k.bucket, k.stream_id, count(*)::integer AS samples,
           avg(r.bitrate_kbps) AS bitrate_kbps_avg,
           min(r.bitrate_kbps) AS bitrate_kbps_min,
           max(r.bitrate_kbps) AS bitrate_kbps_max,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY r.bitrate_kbps) AS bitrate_kbps_p50,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY r.bitrate_kbps) AS bitrate_kbps_p95,
           avg(r.fps) AS fps_avg, min(r.fps) AS fps_min,
           avg(r.packet_loss_pct) AS packet_loss_pct_avg,
           max(r.packet_loss_pct) AS packet_loss_pct_max,
           avg(r.latency_ms) AS latency_ms_avg,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY r.latency_ms) AS latency_ms_p95,
           max(r.latency_ms) AS latency_ms_max,
           (count(*) FILTER (WHERE r.quality = 'good'))::integer AS good_samples,
           (count(*) FILTER (WHERE r.quality = 'fair'))::integer AS fair_samples,
           (count(*) FILTER (WHERE r.quality = 'poor'))::integer AS poor_samples
    FROM rollup_refresh_keys k
    JOIN stream_stats r
      ON r.stream_id = k.stream_id
     AND r.time >= k.bucket AND r.time < k.bucket + interval '1 day'
     -- Redundant with the range, but an equality: a backfill-sized key set can then be
     -- hash-joined instead of merge-joined per stream, which compares every row with every key.
     AND time_bucket('1 day', r.time) = k.bucket
    GROUP BY k.bucket, k.stream_id
),
emptied AS (
    -- Buckets whose raw rows were all deleted lose their rollup row.
    DELETE FROM rollup_1d m USING rollup_refresh_keys k
    WHERE m.stream_id = k.stream_id AND m.bucket = k.bucket
      AND NOT EXISTS (SELECT 1 FROM fresh f WHERE f.stream_id = k.stream_id AND f.bucket = k.bucket)
    RETURNING 1
),
upserted AS (
    INSERT INTO rollup_1d SELECT * FROM fresh
    ON CONFLICT (stream_id, bucket) DO UPDATE SET
        samples = EXCLUDED.samples,
        bitrate_kbps_avg = EXCLUDED.bitrate_kbps_avg,
        bitrate_kbps_min = EXCLUDED.bitrate_kbps_min,
        bitrate_kbps_max = EXCLUDED.bitrate_kbps_max,
        bitrate_kbps_p50 = EXCLUDED.bitrate_kbps_p50,
        bitrate_kbps_p95 = EXCLUDED.bitrate_kbps_p95,
        fps_avg = EXCLUDED.fps_avg,
        fps_min = EXCLUDED.fps_min,
        packet_loss_pct_avg = EXCLUDED.packet_loss_pct_avg,
        packet_loss_pct_max = EXCLUDED.packet_loss_pct_max,
        latency_ms_avg = EXCLUDED.latency_ms_avg,
        latency_ms_p95 = EXCLUDED.latency_ms_p95,
        latency_ms_max = EXCLUDED.latency_ms_max,
        good_samples = EXCLUDED.good_samples,
        fair_samples = EXCLUDED.fair_samples,
        poor_samples = EXCLUDED.poor_samples
    RETURNING 1
)
SELECT (SELECT count(*) FROM upserted) + (SELECT count(*) FROM emptied) AS rows,
       (SELECT count(*) FROM rollup_refresh_keys) AS buckets

-- rollups_delete_1m_before --
-- Retention of 1-minute rollups: delete buckets older than $1.
DELETE FROM rollup_1m WHERE bucket < $1::timestamptz

-- retention_drop_raw --
-- Drop the raw chunks that end before $1 (no row triggers fire: rollups keep those buckets).
SELECT count(*) FROM drop_chunks('stream_stats', older_than => $1::timestamptz)

-- rollups_vacuum --
-- After a refresh: reclaim the consumed log entries and keep the planner's row counts current.
VACUUM (ANALYZE, SKIP_LOCKED) rollup_invalidations, rollup_pending
