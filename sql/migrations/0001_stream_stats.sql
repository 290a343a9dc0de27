-- Raw samples as streamers' clients send them, one row per (stream, client timestamp),
-- and the latest row per stream for O(1) reads of the current state.
CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE stream_stats (
    time            timestamptz      NOT NULL,
    stream_id       uuid             NOT NULL,
    bitrate_kbps    double precision,
    fps             double precision,
    width           integer,
    height          integer,
    audio_level_db  double precision,
    packet_loss_pct double precision,
    latency_ms      double precision,
    upload_kbps     double precision,
    download_kbps   double precision,
    quality         text CHECK (quality IN ('good', 'fair', 'poor')),
    received_at     timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, time)
);

SELECT create_hypertable('stream_stats', 'time', chunk_time_interval => interval '1 day');

COMMENT ON TABLE stream_stats IS 'Raw stream health samples; time is the client timestamp';
COMMENT ON COLUMN stream_stats.quality IS 'good | fair | poor (docs/protocol.md), NULL when no quality metric was sent';
COMMENT ON COLUMN stream_stats.received_at IS 'When the ingest service received the sample';

-- The newest sample per stream (by time; an older late sample never replaces it).
CREATE TABLE stream_latest (
    stream_id       uuid             PRIMARY KEY,
    time            timestamptz      NOT NULL,
    bitrate_kbps    double precision,
    fps             double precision,
    width           integer,
    height          integer,
    audio_level_db  double precision,
    packet_loss_pct double precision,
    latency_ms      double precision,
    upload_kbps     double precision,
    download_kbps   double precision,
    quality         text CHECK (quality IN ('good', 'fair', 'poor')),
    received_at     timestamptz      NOT NULL DEFAULT now()
);

COMMENT ON TABLE stream_latest IS 'Latest sample per stream, kept by the ingest writer';
