-- Named queries of viewer experience: storing beacons (ingest/writer.py), the live window of
-- stream:stats:get, the rollup refresh (jobs/rollups.py), retention and the rebuffering alert.

-- write_beacons --
-- Insert beacons idempotently on (view_id, time), fold the new ones into viewer_views, return those inserted.
WITH input AS (
    SELECT *
    FROM unnest(
        $1::timestamptz[], $2::uuid[], $3::uuid[], $4::text[], $5::float8[], $6::float8[],
        $7::int4[], $8::float8[], $9::int4[], $10::int4[], $11::float8[], $12::int4[],
        $13::int4[], $14::text[], $15::text[]
    ) AS t(time, view_id, stream_id, state, startup_ms, watch_ms, stall_count, stall_ms,
           switches_up, switches_down, bitrate_kbps, width, height, error_code, error_message)
),
inserted AS (
    INSERT INTO viewer_stats (time, view_id, stream_id, state, startup_ms, watch_ms, stall_count,
                              stall_ms, switches_up, switches_down, bitrate_kbps, width, height,
                              error_code, error_message, received_at)
    SELECT input.*, now() FROM input
    ON CONFLICT (view_id, time) DO NOTHING
    RETURNING *
),
views AS (
    -- Counters only grow within a view (the trigger refuses anything else), so the totals are
    -- the greatest values seen, whatever order beacons arrive in. Sorted by view so concurrent
    -- writers lock viewer_views rows in one order.
    INSERT INTO viewer_views AS v (view_id, stream_id, started_at, last_beacon_at, ended_at,
                                   state, startup_ms, watch_time_ms, stall_count, stall_time_ms,
                                   switches_up, switches_down, failed, error_code)
    SELECT view_id, (array_agg(stream_id))[1], min(time), max(time),
           min(time) FILTER (WHERE state IN ('ended', 'failed')),
           (array_agg(state ORDER BY time DESC))[1],
           max(startup_ms), max(watch_ms), max(stall_count), max(stall_ms),
           max(switches_up), max(switches_down), bool_or(state = 'failed'),
           (array_agg(error_code ORDER BY time DESC) FILTER (WHERE error_code IS NOT NULL))[1]
    FROM inserted
    GROUP BY view_id
    ORDER BY view_id
    ON CONFLICT (view_id) DO UPDATE
    SET started_at = least(v.started_at, EXCLUDED.started_at),
        last_beacon_at = greatest(v.last_beacon_at, EXCLUDED.last_beacon_at),
        ended_at = coalesce(v.ended_at, EXCLUDED.ended_at),
        state = CASE WHEN EXCLUDED.last_beacon_at > v.last_beacon_at THEN EXCLUDED.state
                     ELSE v.state END,
        startup_ms = coalesce(v.startup_ms, EXCLUDED.startup_ms),
        watch_time_ms = greatest(v.watch_time_ms, EXCLUDED.watch_time_ms),
        stall_count = greatest(v.stall_count, EXCLUDED.stall_count),
        stall_time_ms = greatest(v.stall_time_ms, EXCLUDED.stall_time_ms),
        switches_up = greatest(v.switches_up, EXCLUDED.switches_up),
        switches_down = greatest(v.switches_down, EXCLUDED.switches_down),
        failed = v.failed OR EXCLUDED.failed,
        error_code = coalesce(EXCLUDED.error_code, v.error_code)
)
SELECT view_id, time FROM inserted

-- viewer_experience_window --
-- Stream $1's viewer experience over beacons stamped from $2 on (no row without beacons).
SELECT * FROM viewer_experience_bucket($1, $2, interval '1 day')

-- viewer_rollups_refresh --
-- Recompute the complete pending buckets of granularity $1 at $2 (= now) from raw beacons and claim them.
WITH due AS (
    SELECT stream_id, bucket FROM viewer_rollup_keys
    WHERE granularity = $1 AND bucket + viewer_rollup_width($1) <= $2
),
fresh AS (
    SELECT * FROM viewer_experience_live
    WHERE granularity = $1 AND bucket + viewer_rollup_width($1) <= $2
),
emptied AS (
    -- Buckets whose beacons were all deleted lose their rollup row.
    DELETE FROM viewer_rollup m USING due d
    WHERE m.granularity = $1 AND m.stream_id = d.stream_id AND m.bucket = d.bucket
      AND NOT EXISTS (SELECT 1 FROM fresh f WHERE f.stream_id = d.stream_id AND f.bucket = d.bucket)
    RETURNING 1
),
upserted AS (
    INSERT INTO viewer_rollup SELECT * FROM fresh
    ON CONFLICT (granularity, stream_id, bucket) DO UPDATE SET
        views = EXCLUDED.views,
        watch_time_ms = EXCLUDED.watch_time_ms,
        stall_time_ms = EXCLUDED.stall_time_ms,
        rebuffer_pct = EXCLUDED.rebuffer_pct,
        stalls_per_minute = EXCLUDED.stalls_per_minute,
        startup_ms_p50 = EXCLUDED.startup_ms_p50,
        startup_ms_p95 = EXCLUDED.startup_ms_p95,
        switches_per_view = EXCLUDED.switches_per_view,
        failure_pct = EXCLUDED.failure_pct,
        exit_before_start_pct = EXCLUDED.exit_before_start_pct,
        score = EXCLUDED.score
    RETURNING 1
),
-- One snapshot for the whole statement: the log entries claimed are exactly those whose beacons
-- `fresh` saw; a writer committing meanwhile keeps its own entries for the next refresh.
claimed_minutes AS (
    DELETE FROM viewer_rollup_invalidations i USING due d
    WHERE $1 = '1m' AND i.stream_id = d.stream_id AND i.minute = d.bucket
    RETURNING i.stream_id, i.minute
),
claimed_buckets AS (
    DELETE FROM viewer_rollup_pending p USING due d
    WHERE p.granularity = $1 AND p.stream_id = d.stream_id AND p.bucket = d.bucket
    RETURNING 1
),
queued AS (
    -- The hours and days of the minutes claimed, recomputed once complete.
    INSERT INTO viewer_rollup_pending (granularity, stream_id, bucket)
    SELECT DISTINCT g.granularity, c.stream_id, time_bucket(viewer_rollup_width(g.granularity), c.minute)
    FROM claimed_minutes c CROSS JOIN (VALUES ('1h'), ('1d')) AS g(granularity)
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM upserted) + (SELECT count(*) FROM emptied) AS rows,
       (SELECT count(*) FROM due) AS buckets,
       (SELECT count(*) FROM claimed_buckets) + (SELECT count(*) FROM queued) AS queued

-- viewer_rollups_delete_1m_before --
-- Retention of 1-minute viewer rollups: delete buckets older than $1.
DELETE FROM viewer_rollup WHERE granularity = '1m' AND bucket < $1::timestamptz

-- viewer_retention_drop_raw --
-- Drop the beacon chunks that end before $1 (no row triggers fire: rollups keep those buckets).
SELECT count(*) FROM drop_chunks('viewer_stats', older_than => $1::timestamptz)

-- viewer_rollups_vacuum --
-- After a refresh: reclaim the consumed log entries and keep the planner's row counts current.
VACUUM (ANALYZE, SKIP_LOCKED) viewer_rollup_invalidations, viewer_rollup_pending

-- rebuffering_windows --
-- Views and rebuffering per stream over beacons stamped from $1 on, and whether a rebuffering_high alert is open.
WITH streams AS (
    SELECT DISTINCT stream_id FROM viewer_stats WHERE time >= $1
    UNION
    SELECT stream_id FROM stream_alerts WHERE type = 'rebuffering_high' AND cleared_at IS NULL
)
SELECT s.stream_id, coalesce(e.views, 0) AS views, e.rebuffer_pct,
       EXISTS (SELECT 1 FROM stream_alerts a
               WHERE a.stream_id = s.stream_id AND a.type = 'rebuffering_high'
                 AND a.cleared_at IS NULL) AS open
FROM streams s
LEFT JOIN LATERAL viewer_experience_bucket(s.stream_id, $1, interval '1 day') e ON true
ORDER BY s.stream_id

-- beacon_writer_probe --
-- A cheap round trip: is the database reachable again, and can the writer store beacons there?
SELECT current_setting('transaction_read_only') = 'off'
       AND to_regclass('viewer_stats') IS NOT NULL
       AND to_regclass('viewer_views') IS NOT NULL
