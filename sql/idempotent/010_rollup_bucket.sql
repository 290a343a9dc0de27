-- The rollup aggregates, defined once: the views compute pending buckets with it and the
-- rollups job (sql/queries/rollups.sql) materializes complete buckets with it.

-- One stream's bucket [bucket, bucket + width) from raw rows; no row when it holds none.
-- LANGUAGE sql, STABLE and a single SELECT, so the planner inlines it: called from a LATERAL
-- join over pending keys it becomes an index range scan on the raw primary key per key, and
-- a view's filters on bucket and stream_id still reach the key tables.
CREATE OR REPLACE FUNCTION rollup_bucket(stream uuid, bucket timestamptz, width interval)
RETURNS TABLE (
    samples             integer,
    bitrate_kbps_avg    double precision,
    bitrate_kbps_min    double precision,
    bitrate_kbps_max    double precision,
    bitrate_kbps_p50    double precision,
    bitrate_kbps_p95    double precision,
    fps_avg             double precision,
    fps_min             double precision,
    packet_loss_pct_avg double precision,
    packet_loss_pct_max double precision,
    latency_ms_avg      double precision,
    latency_ms_p95      double precision,
    latency_ms_max      double precision,
    good_samples        integer,
    fair_samples        integer,
    poor_samples        integer
)
LANGUAGE sql STABLE
AS $$
SELECT count(*)::integer,
       avg(r.bitrate_kbps), min(r.bitrate_kbps), max(r.bitrate_kbps),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY r.bitrate_kbps),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY r.bitrate_kbps),
       avg(r.fps), min(r.fps),
       avg(r.packet_loss_pct), max(r.packet_loss_pct),
       avg(r.latency_ms),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY r.latency_ms),
       max(r.latency_ms),
       (count(*) FILTER (WHERE r.quality = 'good'))::integer,
       (count(*) FILTER (WHERE r.quality = 'fair'))::integer,
       (count(*) FILTER (WHERE r.quality = 'poor'))::integer
FROM stream_stats r
WHERE r.stream_id = rollup_bucket.stream
  AND r.time >= rollup_bucket.bucket AND r.time < rollup_bucket.bucket + rollup_bucket.width
HAVING count(*) > 0
$$;

COMMENT ON FUNCTION rollup_bucket(uuid, timestamptz, interval) IS
    'Rollup aggregates of one stream over [bucket, bucket + width) from raw rows';
