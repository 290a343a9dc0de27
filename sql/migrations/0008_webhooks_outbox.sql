-- The alert outbox: every alert transition (raised/cleared, every type) is written here in the
-- transaction that changes its episode, so webhooks and the Socket.IO relay read it from one
-- durable place (streamstats/outbox.py) instead of from a NOTIFY any login can send.

CREATE TABLE alert_events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The public id receivers drop duplicates by (webhook payload `id`).
    event_id   uuid        NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    type       text        NOT NULL CHECK (type IN ('alert.raised', 'alert.cleared')),
    stream_id  uuid        NOT NULL,
    -- The `stream:alert` payload exactly as clients receive it (docs/protocol.md).
    data       jsonb       NOT NULL,
    -- The insert's own clock, not the transaction start: the relay's catch-up window is
    -- measured from it, and the gap to commit is then only the rest of the transaction.
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX alert_events_created ON alert_events (created_at);

COMMENT ON TABLE alert_events IS 'Every alert transition, written with the episode change (docs/operations.md, Webhooks)';
COMMENT ON COLUMN alert_events.data IS 'The stream:alert payload sent to clients and as webhook data';

-- Webhook endpoints, kept in step with STREAMSTATS_WEBHOOK_URLS by the delivery worker. Ingest
-- nodes need no webhook settings: each event is fanned out to the active endpoints here.
CREATE TABLE webhook_endpoints (
    id       integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    url      text        NOT NULL UNIQUE,
    active   boolean     NOT NULL DEFAULT true,
    added_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_deliveries (
    event_id        bigint      NOT NULL REFERENCES alert_events (id) ON DELETE CASCADE,
    endpoint_id     integer     NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    -- Copied from the event: deliveries are ordered per endpoint and stream.
    stream_id       uuid        NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    last_attempt_at timestamptz,
    delivered_at    timestamptz,
    PRIMARY KEY (event_id, endpoint_id)
);

-- What the workers look for: the pending deliveries of an endpoint, per stream in order.
CREATE INDEX webhook_deliveries_pending
    ON webhook_deliveries (endpoint_id, stream_id, event_id) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_dead ON webhook_deliveries (event_id) WHERE status = 'dead';

COMMENT ON TABLE webhook_deliveries IS 'One row per event and endpoint: pending until delivered, dead after the retry period';

-- Analysts may read the events (no secrets); endpoint URLs can carry tokens (Slack), so the
-- endpoint and delivery tables stay closed to them.
GRANT SELECT ON alert_events TO streamstats_analyst;
