-- Named queries of threshold alerts (ingest/alerts.py) and bitrate drops (jobs/drops.py).

-- alert_raise --
-- Open an episode unless one is open for this stream and type; returns a row only when it opened.
INSERT INTO stream_alerts (stream_id, type, value, threshold, raised_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (stream_id, type) WHERE cleared_at IS NULL DO NOTHING
RETURNING id, raised_at

-- alert_clear --
-- Close the open episode of this stream and type, if any; returns it when it was closed.
UPDATE stream_alerts
SET cleared_at = greatest($3::timestamptz, raised_at)
WHERE stream_id = $1 AND type = $2 AND cleared_at IS NULL
RETURNING id, value, threshold, raised_at, cleared_at

-- alerts_open --
-- The open episodes of these streams (a partial index covers them).
SELECT stream_id, type FROM stream_alerts WHERE cleared_at IS NULL AND stream_id = ANY($1::uuid[])

-- drops_watermark --
-- The sample time the previous run reached ($1 on the first run), locking it until commit.
INSERT INTO bitrate_drops_watermark (scanned_to) VALUES ($1)
ON CONFLICT (singleton) DO UPDATE SET singleton = true
RETURNING scanned_to

-- drops_watermark_set --
-- Record how far this run has looked.
UPDATE bitrate_drops_watermark SET scanned_to = $1, updated_at = now()

-- drops_open --
-- Drops still open after the previous run: they continue in this one.
SELECT stream_id, started_at, baseline_kbps, observed_kbps
FROM bitrate_drops
WHERE ended_at IS NULL

-- drops_samples --
-- Bitrate samples in (since, until], the look-back included, per stream in time order.
SELECT stream_id, time, bitrate_kbps
FROM stream_stats
WHERE time > $1 AND time <= $2 AND bitrate_kbps IS NOT NULL
ORDER BY stream_id, time

-- drops_upsert --
-- Store episodes once each: new starts are inserted, open ones updated; closed ones never change.
WITH incoming AS (
    SELECT *
    FROM unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[], $4::float8[], $5::float8[],
                $6::float8[])
        AS t(stream_id, started_at, ended_at, baseline_kbps, observed_kbps, drop_pct)
),
known AS (
    -- Every CTE sees the table as it was before this statement: what existed already.
    SELECT d.stream_id, d.started_at
    FROM bitrate_drops d JOIN incoming USING (stream_id, started_at)
),
stored AS (
    INSERT INTO bitrate_drops (stream_id, started_at, ended_at, baseline_kbps, observed_kbps,
                               drop_pct)
    SELECT * FROM incoming ORDER BY stream_id, started_at
    ON CONFLICT (stream_id, started_at) DO UPDATE
        SET ended_at = EXCLUDED.ended_at,
            observed_kbps = least(bitrate_drops.observed_kbps, EXCLUDED.observed_kbps),
            drop_pct = greatest(bitrate_drops.drop_pct, EXCLUDED.drop_pct)
        WHERE bitrate_drops.ended_at IS NULL
    RETURNING *
)
SELECT stored.*, known.stream_id IS NULL AS started
FROM stored LEFT JOIN known USING (stream_id, started_at)
ORDER BY stored.started_at, stored.stream_id
