-- Quality advice given to streamers (analytics/advice.py, ingest/advice.py) and the advisor state
-- that lets a restarted or another ingest node carry on without repeating or contradicting it.

CREATE TABLE stream_advice (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id uuid        NOT NULL,
    issued_at timestamptz NOT NULL,
    action    text        NOT NULL CHECK (action IN ('lower', 'raise')),
    target    jsonb       NOT NULL,
    reasons   text[]      NOT NULL,
    severity  text        NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    basis     jsonb       NOT NULL
);

CREATE INDEX stream_advice_stream_issued ON stream_advice (stream_id, issued_at);

COMMENT ON TABLE stream_advice IS 'Every quality advice sent to a stream: lower or raise, with the target to send at';
COMMENT ON COLUMN stream_advice.issued_at IS 'Sample time of the report that called for the advice';
COMMENT ON COLUMN stream_advice.target IS '{bitrate (kbps), width, height, fps}: what to send at';
COMMENT ON COLUMN stream_advice.reasons IS 'packet_loss, latency, headroom, encoder_overload; recovered for a raise';
COMMENT ON COLUMN stream_advice.basis IS 'Medians of the window the advice was decided on (docs/protocol.md)';

-- One row per advised stream: the advisor's state as JSON at its last advice. `version` grows by
-- one per advice, so of two nodes deciding from the same state only one records (and sends) it.
CREATE TABLE stream_advisor_state (
    stream_id  uuid        PRIMARY KEY,
    version    bigint      NOT NULL,
    state      jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE stream_advisor_state IS 'Internal: the quality advisor state per stream at its last advice';

GRANT SELECT ON stream_advice TO streamstats_analyst;
