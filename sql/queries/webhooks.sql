-- Named queries of webhook delivery (jobs/webhooks.py), its command and its metrics.

-- webhook_endpoints_sync --
-- Make the configured URLs the active endpoints; returns them with their ids.
WITH configured AS (
    INSERT INTO webhook_endpoints (url)
    SELECT unnest($1::text[])
    ON CONFLICT (url) DO UPDATE SET active = true
    RETURNING id, url
), retired AS (
    UPDATE webhook_endpoints SET active = false
    WHERE active AND url <> ALL($1::text[])
    RETURNING id
), orphaned AS (
    -- Nobody delivers to a retired endpoint: its pending deliveries are kept as dead.
    UPDATE webhook_deliveries SET status = 'dead', last_error = 'endpoint no longer configured'
    WHERE status = 'pending' AND endpoint_id IN (SELECT id FROM retired)
)
SELECT id, url FROM configured

-- webhook_claim --
-- Lock the next deliverable attempts of an endpoint: per stream only the oldest pending one.
SELECT d.event_id, d.attempts, d.queued_at, e.event_id AS public_id, e.type, e.created_at,
       e.data::text AS data
FROM webhook_deliveries d
JOIN alert_events e ON e.id = d.event_id
WHERE d.endpoint_id = $1
  AND d.status = 'pending'
  AND d.next_attempt_at <= now()
  AND NOT EXISTS (
      SELECT 1 FROM webhook_deliveries earlier
      WHERE earlier.endpoint_id = d.endpoint_id AND earlier.stream_id = d.stream_id
        AND earlier.status = 'pending' AND earlier.event_id < d.event_id
  )
ORDER BY d.event_id
LIMIT $2
FOR UPDATE OF d SKIP LOCKED

-- webhook_delivered --
-- Record a successful attempt.
UPDATE webhook_deliveries
SET status = 'delivered', attempts = attempts + 1, last_attempt_at = now(),
    delivered_at = now(), last_error = NULL
WHERE event_id = $1 AND endpoint_id = $2

-- webhook_failed --
-- Record a failed attempt: retry at $4, or dead when that is past the retry period $5.
UPDATE webhook_deliveries
SET attempts = attempts + 1, last_attempt_at = now(), last_error = left($3, 500),
    next_attempt_at = $4,
    status = CASE WHEN $4 > queued_at + $5::interval THEN 'dead' ELSE 'pending' END
WHERE event_id = $1 AND endpoint_id = $2
RETURNING status

-- webhook_list --
-- Pending and dead deliveries, oldest first (`streamstats webhooks`).
SELECT d.event_id, e.event_id AS public_id, e.type, e.stream_id, e.data->>'type' AS alert,
       w.url, d.status, d.attempts, d.next_attempt_at, d.last_error, e.created_at
FROM webhook_deliveries d
JOIN alert_events e ON e.id = d.event_id
JOIN webhook_endpoints w ON w.id = d.endpoint_id
WHERE d.status IN ('pending', 'dead')
ORDER BY d.event_id, w.id
LIMIT $1

-- webhook_requeue --
-- Dead deliveries back to pending, due now, with a new retry period; returns how many.
WITH requeued AS (
    UPDATE webhook_deliveries d
    SET status = 'pending', next_attempt_at = now(), queued_at = now()
    FROM webhook_endpoints w
    WHERE w.id = d.endpoint_id AND w.active AND d.status = 'dead'
    RETURNING 1
)
SELECT count(*) FROM requeued

-- webhook_stats --
-- Deliveries by status, failed attempts and the age of the oldest pending one (for /metrics).
SELECT count(*) FILTER (WHERE d.status = 'pending') AS pending,
       count(*) FILTER (WHERE d.status = 'delivered') AS delivered,
       count(*) FILTER (WHERE d.status = 'dead') AS dead,
       coalesce(sum(d.attempts) - count(*) FILTER (WHERE d.status = 'delivered'), 0) AS failed,
       coalesce(extract(epoch FROM now() - min(d.queued_at) FILTER (WHERE d.status = 'pending')),
                0)::float8 AS oldest_pending_s
FROM webhook_deliveries d
