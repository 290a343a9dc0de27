-- The analyst views (docs/analysts.md): materialized buckets that are not pending, plus the
-- pending ones computed live with rollup_bucket(). How the rollups stay exact is explained in
-- sql/migrations/0002_rollups_and_jobs.sql. The key columns of the live part come from the
-- pending-key side (k), not from the function: a view's filters on bucket and stream_id then
-- reach the small pending tables and, per key, the raw primary key.

CREATE OR REPLACE VIEW stream_stats_1m AS
SELECT m.*
FROM rollup_1m m
WHERE NOT EXISTS (
    SELECT 1 FROM rollup_invalidations i
    WHERE i.stream_id = m.stream_id AND i.minute = m.bucket
)
UNION ALL
SELECT k.bucket, k.stream_id, a.*
FROM (SELECT DISTINCT stream_id, minute AS bucket FROM rollup_invalidations) k
CROSS JOIN LATERAL rollup_bucket(k.stream_id, k.bucket, interval '1 minute') a;

CREATE OR REPLACE VIEW stream_stats_1h AS
SELECT m.*
FROM rollup_1h m
WHERE NOT EXISTS (
    SELECT 1 FROM rollup_pending p
    WHERE p.granularity = '1h' AND p.stream_id = m.stream_id AND p.bucket = m.bucket
)
AND NOT EXISTS (
    SELECT 1 FROM rollup_invalidations i
    WHERE i.stream_id = m.stream_id
      AND i.minute >= m.bucket AND i.minute < m.bucket + interval '1 hour'
)
UNION ALL
SELECT k.bucket, k.stream_id, a.*
FROM (
    SELECT stream_id, bucket FROM rollup_pending WHERE granularity = '1h'
    UNION
    SELECT stream_id, time_bucket('1 hour', minute) FROM rollup_invalidations
) k
CROSS JOIN LATERAL rollup_bucket(k.stream_id, k.bucket, interval '1 hour') a;

CREATE OR REPLACE VIEW stream_stats_1d AS
SELECT m.*
FROM rollup_1d m
WHERE NOT EXISTS (
    SELECT 1 FROM rollup_pending p
    WHERE p.granularity = '1d' AND p.stream_id = m.stream_id AND p.bucket = m.bucket
)
AND NOT EXISTS (
    SELECT 1 FROM rollup_invalidations i
    WHERE i.stream_id = m.stream_id
      AND i.minute >= m.bucket AND i.minute < m.bucket + interval '1 day'
)
UNION ALL
SELECT k.bucket, k.stream_id, a.*
FROM (
    SELECT stream_id, bucket FROM rollup_pending WHERE granularity = '1d'
    UNION
    SELECT stream_id, time_bucket('1 day', minute) FROM rollup_invalidations
) k
CROSS JOIN LATERAL rollup_bucket(k.stream_id, k.bucket, interval '1 day') a;

COMMENT ON VIEW stream_stats_1m IS 'Per stream and minute; exact, never stale (docs/analysts.md)';
COMMENT ON VIEW stream_stats_1h IS 'Per stream and hour; exact, never stale (docs/analysts.md)';
COMMENT ON VIEW stream_stats_1d IS 'Per stream and UTC day; exact, never stale (docs/analysts.md)';
