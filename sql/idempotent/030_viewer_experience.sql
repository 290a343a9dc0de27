-- Viewer experience, defined once (tables and trigger: sql/migrations/0006_viewer_experience.sql;
-- the columns and the score: docs/analysts.md, analytics/viewer.py).

-- The view's beacon just before / after `at` (none if the view sent nothing within a day): what a
-- beacon's counters are compared with. A set-returning SQL function, so it is inlined as an index
-- probe on the primary key; the day bounds the probe to at most two chunks.
CREATE OR REPLACE FUNCTION viewer_stats_before(view uuid, at timestamptz)
RETURNS SETOF viewer_stats
LANGUAGE sql STABLE ROWS 1
AS $$
SELECT * FROM viewer_stats b
WHERE b.view_id = viewer_stats_before.view
  AND b.time < viewer_stats_before.at AND b.time >= viewer_stats_before.at - interval '1 day'
ORDER BY b.time DESC
LIMIT 1
$$;

CREATE OR REPLACE FUNCTION viewer_stats_after(view uuid, at timestamptz)
RETURNS SETOF viewer_stats
LANGUAGE sql STABLE ROWS 1
AS $$
SELECT * FROM viewer_stats b
WHERE b.view_id = viewer_stats_after.view
  AND b.time > viewer_stats_after.at AND b.time <= viewer_stats_after.at + interval '1 day'
ORDER BY b.time
LIMIT 1
$$;

-- Refuse beacon `b` after the view's beacon `a`, naming the protocol field (check_violation with
-- COLUMN set: the ingest writer answers `invalid` with that field, other beacons are stored).
CREATE OR REPLACE FUNCTION viewer_stats_follows(a viewer_stats, b viewer_stats) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    gap_ms double precision := 1000 * extract(epoch FROM b.time - a.time);
    field  text;
    detail text;
BEGIN
    IF b.stream_id <> a.stream_id THEN
        field := 'streamId';
        detail := format('the view belongs to stream %s', a.stream_id);
    ELSIF a.state IN ('ended', 'failed') THEN
        field := 'state';
        detail := format('the view %s at %s: no beacon may follow', a.state, a.time);
    ELSIF b.watch_ms < a.watch_ms THEN
        field := 'watchTime';
    ELSIF b.stall_count < a.stall_count THEN
        field := 'stalls.count';
    ELSIF b.stall_ms < a.stall_ms THEN
        field := 'stalls.duration';
    ELSIF b.switches_up < a.switches_up THEN
        field := 'renditionChanges.up';
    ELSIF b.switches_down < a.switches_down THEN
        field := 'renditionChanges.down';
    ELSIF a.startup_ms IS NOT NULL AND b.startup_ms IS DISTINCT FROM a.startup_ms THEN
        field := 'startupTime';
        detail := format('changed within the view (%s ms at %s)', a.startup_ms, a.time);
    ELSIF (b.watch_ms - a.watch_ms) + (b.stall_ms - a.stall_ms) > 1.1 * gap_ms + 2000 THEN
        -- Watching and stalling take wall time: allow 10 % and 2 s of timer and clock jitter.
        field := 'watchTime';
        detail := format('watchTime and stalls.duration grew by %s ms in %s ms',
                         (b.watch_ms - a.watch_ms) + (b.stall_ms - a.stall_ms), gap_ms);
    ELSE
        RETURN;
    END IF;
    RAISE EXCEPTION '%: %', field,
        coalesce(detail, format('went backwards within the view (beacons at %s and %s)', a.time, b.time))
        USING ERRCODE = 'check_violation', COLUMN = field;
END
$$;

-- The score of one view over one bucket, 0–100 (docs/analysts.md; analytics/viewer.py).
CREATE OR REPLACE FUNCTION viewer_view_score(
    startup_ms double precision, watch_ms double precision, stall_ms double precision,
    stalls double precision, failed boolean
) RETURNS double precision
LANGUAGE sql IMMUTABLE
AS $$
SELECT CASE WHEN failed THEN 0::float8 ELSE
    100::float8
    * CASE WHEN startup_ms IS NULL THEN 1::float8
           ELSE 8::float8 / (8::float8 + greatest(startup_ms, 0) / 1000) END
    * (1 / sqrt(1 + (stalls / 2) ^ 2)
       + exp(-10 * CASE WHEN watch_ms + stall_ms > 0 THEN stall_ms / (watch_ms + stall_ms)
                        ELSE 0::float8 END)) / 2
END
$$;

-- One stream's viewer experience over [bucket, bucket + width) from raw beacons; no row without
-- beacons. Each beacon adds the difference to the view's previous beacon; a view's startup time
-- counts in the bucket of its first beacon that has one; a view fails in the bucket of its
-- `failed` beacon and exits before video start in that of an `ended` beacon without startup.
-- Inlined like rollup_bucket(): an index range scan per key.
CREATE OR REPLACE FUNCTION viewer_experience_bucket(stream uuid, bucket timestamptz, width interval)
RETURNS TABLE (
    views                 integer,
    watch_time_ms         double precision,
    stall_time_ms         double precision,
    rebuffer_pct          double precision,
    stalls_per_minute     double precision,
    startup_ms_p50        double precision,
    startup_ms_p95        double precision,
    switches_per_view     double precision,
    failure_pct           double precision,
    exit_before_start_pct double precision,
    score                 double precision
)
LANGUAGE sql STABLE
AS $$
WITH beacons AS (
    SELECT b.view_id,
           (b.watch_ms - coalesce(p.watch_ms, 0))::float8 AS watch_ms,
           (b.stall_ms - coalesce(p.stall_ms, 0))::float8 AS stall_ms,
           (b.stall_count - coalesce(p.stall_count, 0))::float8 AS stalls,
           (b.switches_up + b.switches_down
            - coalesce(p.switches_up + p.switches_down, 0))::float8 AS switches,
           CASE WHEN p.startup_ms IS NULL THEN b.startup_ms END AS startup_ms,
           b.state = 'failed' AS failed,
           b.state = 'ended' AND b.startup_ms IS NULL AS exited
    FROM viewer_stats b
    LEFT JOIN LATERAL viewer_stats_before(b.view_id, b.time) p ON true
    WHERE b.stream_id = viewer_experience_bucket.stream
      AND b.time >= viewer_experience_bucket.bucket
      AND b.time < viewer_experience_bucket.bucket + viewer_experience_bucket.width
),
per_view AS (
    SELECT view_id, sum(watch_ms) AS watch_ms, sum(stall_ms) AS stall_ms, sum(stalls) AS stalls,
           sum(switches) AS switches, max(startup_ms) AS startup_ms,
           bool_or(failed) AS failed, bool_or(exited) AS exited
    FROM beacons
    GROUP BY view_id
)
SELECT count(*)::integer,
       sum(watch_ms), sum(stall_ms),
       100 * sum(stall_ms) / nullif(sum(watch_ms) + sum(stall_ms), 0),
       sum(stalls) / nullif(sum(watch_ms) / 60000, 0),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY startup_ms),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY startup_ms),
       sum(switches) / count(*),
       100 * (count(*) FILTER (WHERE failed))::float8 / count(*),
       100 * (count(*) FILTER (WHERE exited))::float8 / count(*),
       avg(viewer_view_score(startup_ms, watch_ms, stall_ms, stalls, failed))
           FILTER (WHERE failed OR watch_ms > 0)
FROM per_view
HAVING count(*) > 0
$$;

COMMENT ON FUNCTION viewer_experience_bucket(uuid, timestamptz, interval) IS
    'Viewer experience of one stream over [bucket, bucket + width) from raw beacons';

CREATE OR REPLACE FUNCTION viewer_rollup_width(granularity text) RETURNS interval
LANGUAGE sql IMMUTABLE
AS $$
SELECT CASE granularity WHEN '1m' THEN interval '1 minute' WHEN '1h' THEN interval '1 hour'
                        WHEN '1d' THEN interval '1 day' END
$$;

-- The buckets to compute live: changed minutes, queued hours and days, and the hours and days
-- of changed minutes (not queued until their minute is refreshed).
CREATE OR REPLACE VIEW viewer_rollup_keys AS
SELECT '1m'::text AS granularity, stream_id, minute AS bucket FROM viewer_rollup_invalidations
UNION
SELECT granularity, stream_id, bucket FROM viewer_rollup_pending
UNION
SELECT '1h', stream_id, time_bucket('1 hour', minute) FROM viewer_rollup_invalidations
UNION
SELECT '1d', stream_id, time_bucket('1 day', minute) FROM viewer_rollup_invalidations;

-- Pending buckets computed from raw beacons; the key columns come from the key side, so filters
-- on granularity, bucket and stream_id reach the key tables.
CREATE OR REPLACE VIEW viewer_experience_live AS
SELECT k.granularity, k.bucket, k.stream_id, e.*
FROM viewer_rollup_keys k
CROSS JOIN LATERAL viewer_experience_bucket(k.stream_id, k.bucket, viewer_rollup_width(k.granularity)) e;

-- Every granularity: materialized buckets that are not pending, plus the pending ones live.
CREATE OR REPLACE VIEW viewer_experience AS
SELECT m.*
FROM viewer_rollup m
WHERE NOT EXISTS (
    SELECT 1 FROM viewer_rollup_keys k
    WHERE k.granularity = m.granularity AND k.stream_id = m.stream_id AND k.bucket = m.bucket
)
UNION ALL
SELECT * FROM viewer_experience_live;

CREATE OR REPLACE VIEW viewer_experience_1m AS
SELECT bucket, stream_id, views, watch_time_ms, stall_time_ms, rebuffer_pct, stalls_per_minute,
       startup_ms_p50, startup_ms_p95, switches_per_view, failure_pct, exit_before_start_pct, score
FROM viewer_experience WHERE granularity = '1m';

CREATE OR REPLACE VIEW viewer_experience_1h AS
SELECT bucket, stream_id, views, watch_time_ms, stall_time_ms, rebuffer_pct, stalls_per_minute,
       startup_ms_p50, startup_ms_p95, switches_per_view, failure_pct, exit_before_start_pct, score
FROM viewer_experience WHERE granularity = '1h';

CREATE OR REPLACE VIEW viewer_experience_1d AS
SELECT bucket, stream_id, views, watch_time_ms, stall_time_ms, rebuffer_pct, stalls_per_minute,
       startup_ms_p50, startup_ms_p95, switches_per_view, failure_pct, exit_before_start_pct, score
FROM viewer_experience WHERE granularity = '1d';

COMMENT ON VIEW viewer_experience_1m IS 'Viewer experience per stream and minute; exact, never stale (docs/analysts.md)';
COMMENT ON VIEW viewer_experience_1h IS 'Viewer experience per stream and hour; exact, never stale (docs/analysts.md)';
COMMENT ON VIEW viewer_experience_1d IS 'Viewer experience per stream and UTC day; exact, never stale (docs/analysts.md)';
