-- Rollup refresh (jobs/rollups.py) and rollup state. All refresh steps run in one transaction
-- under the `rollups` job lock. A step claims log entries, then recomputes their buckets from raw
-- rows in a later statement: whatever it claimed was committed, so its rows are visible then; a
-- writer that commits in between still has its own log entries, unclaimed, and the next refresh
-- recomputes its buckets again. Nothing committed is ever left out. A recomputed bucket's row is
-- deleted and written again (`forget`, then `store`, with the aggregates of rollup_bucket() in
-- sql/idempotent/010_rollup_bucket.sql), so no column list is repeated here; readers see the
-- old row until the refresh commits.

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

-- rollups_forget_1m --
-- Delete the materialized rows of the claimed minutes; rollups_store_1m writes them again.
WITH forgotten AS (
    DELETE FROM rollup_1m m USING rollup_refresh_keys k
    WHERE m.stream_id = k.stream_id AND m.bucket = k.bucket
    RETURNING 1
)
SELECT count(*) FROM forgotten

-- rollups_store_1m --
-- Materialize the claimed minutes from raw rows (none for an emptied one); queue their hours and days.
WITH stored AS (
    INSERT INTO rollup_1m
    SELECT k.bucket, k.stream_id, a.*
    FROM rollup_refresh_keys k
    CROSS JOIN LATERAL rollup_bucket(k.stream_id, k.bucket, interval '1 minute') a
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
SELECT (SELECT count(*) FROM stored) AS rows,
       (SELECT count(*) FROM rollup_refresh_keys) AS buckets,
       (SELECT count(*) FROM queued) AS queued

-- rollups_forget_1h --
-- Delete the materialized rows of the claimed hours; rollups_store_1h writes them again.
WITH forgotten AS (
    DELETE FROM rollup_1h m USING rollup_refresh_keys k
    WHERE m.stream_id = k.stream_id AND m.bucket = k.bucket
    RETURNING 1
)
SELECT count(*) FROM forgotten

-- rollups_store_1h --
-- Materialize the claimed hours from raw rows (percentiles do not compose from minutes).
WITH stored AS (
    INSERT INTO rollup_1h
    SELECT k.bucket, k.stream_id, a.*
    FROM rollup_refresh_keys k
    CROSS JOIN LATERAL rollup_bucket(k.stream_id, k.bucket, interval '1 hour') a
    RETURNING 1
)
SELECT (SELECT count(*) FROM stored) AS rows,
       (SELECT count(*) FROM rollup_refresh_keys) AS buckets

-- rollups_forget_1d --
-- Delete the materialized rows of the claimed days; rollups_store_1d writes them again.
WITH forgotten AS (
    DELETE FROM rollup_1d m USING rollup_refresh_keys k
    WHERE m.stream_id = k.stream_id AND m.bucket = k.bucket
    RETURNING 1
)
SELECT count(*) FROM forgotten

-- rollups_store_1d --
-- Materialize the claimed UTC days from raw rows.
WITH stored AS (
    INSERT INTO rollup_1d
    SELECT k.bucket, k.stream_id, a.*
    FROM rollup_refresh_keys k
    CROSS JOIN LATERAL rollup_bucket(k.stream_id, k.bucket, interval '1 day') a
    RETURNING 1
)
SELECT (SELECT count(*) FROM stored) AS rows,
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
