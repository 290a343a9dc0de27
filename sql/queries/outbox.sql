-- Named queries of the alert outbox (streamstats/outbox.py) and its Socket.IO relay.

-- outbox_stream_lock --
-- Serialize the outbox writes of one stream until commit, so its ids follow commit order.
SELECT pg_advisory_xact_lock(hashtextextended('alert_events:' || $1::text, 0))

-- outbox_insert --
-- Record one alert transition and fan it out to every active webhook endpoint ($3: JSON text,
-- whatever codecs the connection has).
WITH event AS (
    INSERT INTO alert_events (type, stream_id, data)
    VALUES ($1, $2, $3::text::jsonb)
    RETURNING id, stream_id
), fanned AS (
    INSERT INTO webhook_deliveries (event_id, endpoint_id, stream_id)
    SELECT event.id, webhook_endpoints.id, event.stream_id
    FROM event CROSS JOIN webhook_endpoints
    WHERE webhook_endpoints.active
)
SELECT id FROM event

-- outbox_notify --
-- Wake the relays of every ingest node at commit; the payload is only a hint, never trusted.
SELECT pg_notify($1, $2)

-- outbox_recent --
-- The database's clock and the events created after $1 (database time) but within $2 of now.
SELECT statement_timestamp() AS scanned_at,
       coalesce(json_agg(json_build_object('id', id, 'uuid', event_id, 'data', data) ORDER BY id),
                '[]')::text
           AS events
FROM alert_events
WHERE created_at > greatest($1, statement_timestamp() - $2::interval)

-- outbox_now --
-- The database's clock, from which the relay's first scan starts.
SELECT statement_timestamp()

-- outbox_delete_before --
-- Events created before $1 with no delivery still pending (their deliveries go with them).
DELETE FROM alert_events e
WHERE e.created_at < $1
  AND NOT EXISTS (
      SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id AND d.status = 'pending'
  )
