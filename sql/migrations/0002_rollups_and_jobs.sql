-- Job runs, exact incremental rollups (1 minute, 1 hour, 1 day) with their invalidation log,
-- the analyst views over them, and a read-only analyst role.
--
-- How the rollups stay exact (jobs/rollups.py runs the refresh):
-- * A row trigger on stream_stats logs every touched (stream, minute) in rollup_invalidations,
--   in the writer's own transaction, so a log entry becomes visible exactly when its rows do.
--   Row triggers fire for INSERT, COPY, UPDATE and DELETE, whatever the client; TimescaleDB
--   hypertables have no transition tables, so there is no statement-level alternative.
-- * The entry's key includes the writer's transaction id: ON CONFLICT DO NOTHING only dedupes
--   within one transaction. Keyed by (stream, minute) alone, a writer whose insert hit another
--   transaction's entry would add nothing; a refresh could then consume that entry before the
--   writer commits and the writer's rows would never be rolled up.
-- * The refresh claims (deletes) the entries of complete minutes and recomputes exactly those
--   1-minute buckets from raw rows; it queues their hours and days in rollup_pending, which it
--   recomputes from raw rows once complete (percentiles are not composable).
-- * Whatever is pending (log entries, queued hours/days) is computed live by the views from raw
--   rows, and the materialized row for it is hidden: a query is never stale. Everything else is
--   materialized and current; the pending sets are the (per-bucket) materialization watermark.

CREATE TABLE job_runs (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job           text        NOT NULL,
    -- The scheduler tick this run belongs to (NULL for `streamstats jobs --once`).
    scheduled_for timestamptz,
    started_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at   timestamptz,
    status        text        NOT NULL DEFAULT 'running'
                  CHECK (status IN ('running', 'succeeded', 'failed')),
    rows          bigint,
    error         text
);
-- At most one run per job and tick, however many runners there are.
CREATE UNIQUE INDEX job_runs_one_per_tick ON job_runs (job, scheduled_for)
    WHERE scheduled_for IS NOT NULL;
CREATE INDEX job_runs_job_started ON job_runs (job, started_at DESC);

COMMENT ON TABLE job_runs IS 'One row per scheduled job run: when, outcome, rows written, error';

CREATE TABLE rollup_invalidations (
    stream_id uuid        NOT NULL,
    minute    timestamptz NOT NULL,
    xact      xid8        NOT NULL,
    PRIMARY KEY (stream_id, minute, xact)
);
COMMENT ON TABLE rollup_invalidations IS
    'Minutes of stream_stats changed since the last rollup refresh (written by a row trigger)';

CREATE TABLE rollup_pending (
    granularity text        NOT NULL CHECK (granularity IN ('1h', '1d')),
    stream_id   uuid        NOT NULL,
    bucket      timestamptz NOT NULL,
    PRIMARY KEY (granularity, stream_id, bucket)
);
COMMENT ON TABLE rollup_pending IS
    'Hours and days with changed minutes, recomputed once the bucket is complete';

CREATE FUNCTION stream_stats_invalidate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- BEFORE, not AFTER: no after-trigger queue for a million-row COPY. A row that then loses
    -- an ON CONFLICT DO NOTHING leaves an entry behind, which only costs a recomputation.
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO rollup_invalidations (stream_id, minute, xact)
        VALUES (OLD.stream_id, time_bucket('1 minute', OLD.time), pg_current_xact_id())
        ON CONFLICT DO NOTHING;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    INSERT INTO rollup_invalidations (stream_id, minute, xact)
    VALUES (NEW.stream_id, time_bucket('1 minute', NEW.time), pg_current_xact_id())
    ON CONFLICT DO NOTHING;
    RETURN NEW;
END
$$;

CREATE TRIGGER stream_stats_invalidate
    BEFORE INSERT OR UPDATE OR DELETE ON stream_stats
    FOR EACH ROW EXECUTE FUNCTION stream_stats_invalidate();

CREATE TABLE rollup_1m (
    bucket              timestamptz      NOT NULL,
    stream_id           uuid             NOT NULL,
    samples             integer          NOT NULL,
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
    good_samples        integer          NOT NULL,
    fair_samples        integer          NOT NULL,
    poor_samples        integer          NOT NULL,
    PRIMARY KEY (stream_id, bucket)
);
CREATE TABLE rollup_1h (LIKE rollup_1m INCLUDING ALL);
CREATE TABLE rollup_1d (LIKE rollup_1m INCLUDING ALL);
-- "All streams over a time range" (dashboards, reports) without scanning every stream.
CREATE INDEX rollup_1m_bucket ON rollup_1m (bucket);
CREATE INDEX rollup_1h_bucket ON rollup_1h (bucket);
CREATE INDEX rollup_1d_bucket ON rollup_1d (bucket);

COMMENT ON TABLE rollup_1m IS 'Materialized 1-minute buckets; read stream_stats_1m instead';
COMMENT ON TABLE rollup_1h IS 'Materialized 1-hour buckets; read stream_stats_1h instead';
COMMENT ON TABLE rollup_1d IS 'Materialized 1-day buckets; read stream_stats_1d instead';

-- The views: materialized buckets that are not pending, plus the pending ones computed live.
-- The live part joins the pending keys to raw rows by (stream_id, time range), so a query's
-- filters on bucket and stream_id reach the small pending tables and the raw primary key.

CREATE VIEW stream_stats_1m AS
SELECT m.bucket, m.stream_id, m.samples,
       m.bitrate_kbps_avg, m.bitrate_kbps_min, m.bitrate_kbps_max,
       m.bitrate_kbps_p50, m.bitrate_kbps_p95, m.fps_avg, m.fps_min,
       m.packet_loss_pct_avg, m.packet_loss_pct_max,
       m.latency_ms_avg, m.latency_ms_p95, m.latency_ms_max,
       m.good_samples, m.fair_samples, m.poor_samples
FROM rollup_1m m
WHERE NOT EXISTS (
    SELECT 1 FROM rollup_invalidations i
    WHERE i.stream_id = m.stream_id AND i.minute = m.bucket
)
UNION ALL
SELECT k.bucket, k.stream_id, count(*)::integer,
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
FROM (SELECT DISTINCT stream_id, minute AS bucket FROM rollup_invalidations) k
JOIN stream_stats r
  ON r.stream_id = k.stream_id AND r.time >= k.bucket AND r.time < k.bucket + interval '1 minute'
GROUP BY k.bucket, k.stream_id;

CREATE VIEW stream_stats_1h AS
SELECT m.bucket, m.stream_id, m.samples,
       m.bitrate_kbps_avg, m.bitrate_kbps_min, m.bitrate_kbps_max,
       m.bitrate_kbps_p50, m.bitrate_kbps_p95, m.fps_avg, m.fps_min,
       m.packet_loss_pct_avg, m.packet_loss_pct_max,
       m.latency_ms_avg, m.latency_ms_p95, m.latency_ms_max,
       m.good_samples, m.fair_samples, m.poor_samples
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
SELECT k.bucket, k.stream_id, count(*)::integer,
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
FROM (
    SELECT stream_id, bucket FROM rollup_pending WHERE granularity = '1h'
    UNION
    SELECT stream_id, time_bucket('1 hour', minute) FROM rollup_invalidations
) k
JOIN stream_stats r
  ON r.stream_id = k.stream_id AND r.time >= k.bucket AND r.time < k.bucket + interval '1 hour'
GROUP BY k.bucket, k.stream_id;

CREATE VIEW stream_stats_1d AS
SELECT m.bucket, m.stream_id, m.samples,
       m.bitrate_kbps_avg, m.bitrate_kbps_min, m.bitrate_kbps_max,
       m.bitrate_kbps_p50, m.bitrate_kbps_p95, m.fps_avg, m.fps_min,
       m.packet_loss_pct_avg, m.packet_loss_pct_max,
       m.latency_ms_avg, m.latency_ms_p95, m.latency_ms_max,
       m.good_samples, m.fair_samples, m.poor_samples
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
SELECT k.bucket, k.stream_id, count(*)::integer,
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
FROM (
    SELECT stream_id, bucket FROM rollup_pending WHERE granularity = '1d'
    UNION
    SELECT stream_id, time_bucket('1 day', minute) FROM rollup_invalidations
) k
JOIN stream_stats r
  ON r.stream_id = k.stream_id AND r.time >= k.bucket AND r.time < k.bucket + interval '1 day'
GROUP BY k.bucket, k.stream_id;

COMMENT ON VIEW stream_stats_1m IS 'Per stream and minute; exact, never stale (docs/analysts.md)';
COMMENT ON VIEW stream_stats_1h IS 'Per stream and hour; exact, never stale (docs/analysts.md)';
COMMENT ON VIEW stream_stats_1d IS 'Per stream and UTC day; exact, never stale (docs/analysts.md)';

-- Read-only analysts. Roles are cluster-wide: another database on the server may have made it.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'streamstats_analyst') THEN
        CREATE ROLE streamstats_analyst NOLOGIN;
    END IF;
END
$$;
-- The views read the rollup and raw tables with their owner's rights; analysts need only them
-- and the raw and latest tables.
GRANT USAGE ON SCHEMA public TO streamstats_analyst;
GRANT SELECT ON stream_stats, stream_latest, stream_stats_1m, stream_stats_1h, stream_stats_1d,
    job_runs TO streamstats_analyst;
