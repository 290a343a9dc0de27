-- Threshold alerts raised at ingest, bitrate-drop episodes found by the drops job, and the index
-- of daily reports. Ordinary tables: they are small next to the raw samples.

CREATE TABLE stream_alerts (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id  uuid             NOT NULL,
    type       text             NOT NULL CHECK (type IN ('packet_loss_high', 'fps_low')),
    value      double precision NOT NULL,
    threshold  double precision NOT NULL,
    raised_at  timestamptz      NOT NULL,
    cleared_at timestamptz,
    CHECK (cleared_at IS NULL OR cleared_at >= raised_at)
);

-- At most one open episode per stream and type: raising is an idempotent insert, so a restarted
-- node or a second node seeing the same breach never opens a second episode.
CREATE UNIQUE INDEX stream_alerts_open ON stream_alerts (stream_id, type) WHERE cleared_at IS NULL;
CREATE INDEX stream_alerts_stream_raised ON stream_alerts (stream_id, raised_at);

COMMENT ON TABLE stream_alerts IS 'Threshold alert episodes (packet loss, fps); cleared_at NULL while open';
COMMENT ON COLUMN stream_alerts.value IS 'The metric value of the sample that raised the alert';
COMMENT ON COLUMN stream_alerts.raised_at IS 'Time of the first breaching sample of the episode';
COMMENT ON COLUMN stream_alerts.cleared_at IS 'Time of the first good sample of the run that cleared it';

CREATE TABLE bitrate_drops (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id     uuid             NOT NULL,
    started_at    timestamptz      NOT NULL,
    ended_at      timestamptz,
    baseline_kbps double precision NOT NULL,
    observed_kbps double precision NOT NULL,
    drop_pct      double precision NOT NULL,
    -- Re-runs and overlapping windows find the same start again: they update, never duplicate.
    UNIQUE (stream_id, started_at),
    CHECK (ended_at IS NULL OR ended_at >= started_at)
);

CREATE INDEX bitrate_drops_open ON bitrate_drops (stream_id) WHERE ended_at IS NULL;

COMMENT ON TABLE bitrate_drops IS 'Significant bitrate drops (analytics/drops.py); ended_at NULL while open';
COMMENT ON COLUMN bitrate_drops.baseline_kbps IS 'Trailing median bitrate before the drop started';
COMMENT ON COLUMN bitrate_drops.observed_kbps IS 'Lowest short-window median bitrate during the drop';
COMMENT ON COLUMN bitrate_drops.drop_pct IS '100 * (1 - observed / baseline)';

-- How far (in sample time) the drops job has evaluated: the next run starts there.
CREATE TABLE bitrate_drops_watermark (
    singleton  boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    scanned_to timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE bitrate_drops_watermark IS 'One row: the sample time up to which the drops job has looked';

CREATE TABLE stream_reports (
    stream_id  uuid        NOT NULL,
    day        date        NOT NULL,
    summary    jsonb       NOT NULL,
    path       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, day)
);

CREATE INDEX stream_reports_day ON stream_reports (day);

COMMENT ON TABLE stream_reports IS 'Daily per-stream report: JSON summary and the HTML file written';
COMMENT ON COLUMN stream_reports.path IS 'The report file, relative to STREAMSTATS_REPORTS_DIR';
