-- Viewer experience: the beacons viewers' players send (stream:viewer:stats), one summary row per
-- view, and exact per-stream rollups at 1 minute / 1 hour / 1 day kept the way the stream rollups
-- are (0002): a row trigger logs the touched (stream, minute, xid), the rollups job recomputes
-- complete buckets from raw beacons, the views compute pending buckets live. The functions and
-- views are in sql/idempotent/030_viewer_experience.sql.
--
-- Counters in a beacon are cumulative within a view, so what a beacon adds to its bucket is the
-- difference to the view's previous beacon. A late beacon changes the difference of the beacon
-- after it, so the trigger logs that beacon's minute too.

CREATE TABLE viewer_stats (
    time          timestamptz      NOT NULL,
    view_id       uuid             NOT NULL,
    stream_id     uuid             NOT NULL,
    state         text             NOT NULL
                  CHECK (state IN ('starting', 'playing', 'paused', 'stalled', 'ended', 'failed')),
    startup_ms    double precision CHECK (startup_ms >= 0),
    watch_ms      double precision NOT NULL CHECK (watch_ms >= 0),
    stall_count   integer          NOT NULL CHECK (stall_count >= 0),
    stall_ms      double precision NOT NULL CHECK (stall_ms >= 0),
    switches_up   integer          NOT NULL CHECK (switches_up >= 0),
    switches_down integer          NOT NULL CHECK (switches_down >= 0),
    bitrate_kbps  double precision,
    width         integer,
    height        integer,
    error_code    text,
    error_message text,
    received_at   timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (view_id, time)
);

SELECT create_hypertable('viewer_stats', 'time', chunk_time_interval => interval '1 day');
-- Per stream and time range: the rollups, the live window of stream:stats:get, the alert job.
CREATE INDEX viewer_stats_stream_time ON viewer_stats (stream_id, time);

COMMENT ON TABLE viewer_stats IS 'Viewer beacons (stream:viewer:stats); counters cumulative per view; time is the client timestamp';

-- One row per view, kept current by the ingest writer from the beacons it stores.
CREATE TABLE viewer_views (
    view_id             uuid             PRIMARY KEY,
    stream_id           uuid             NOT NULL,
    started_at          timestamptz      NOT NULL,
    last_beacon_at      timestamptz      NOT NULL,
    ended_at            timestamptz,
    state               text             NOT NULL,
    startup_ms          double precision,
    watch_time_ms       double precision NOT NULL,
    stall_count         integer          NOT NULL,
    stall_time_ms       double precision NOT NULL,
    switches_up         integer          NOT NULL,
    switches_down       integer          NOT NULL,
    failed              boolean          NOT NULL,
    error_code          text,
    exited_before_start boolean GENERATED ALWAYS AS
                        (ended_at IS NOT NULL AND startup_ms IS NULL AND NOT failed) STORED
);
CREATE INDEX viewer_views_stream_started ON viewer_views (stream_id, started_at);

COMMENT ON TABLE viewer_views IS 'One row per view: first and last beacon, end, startup, totals, failure, exit before video start';

CREATE TABLE viewer_rollup_invalidations (
    stream_id uuid        NOT NULL,
    minute    timestamptz NOT NULL,
    xact      xid8        NOT NULL,
    PRIMARY KEY (stream_id, minute, xact)
);
COMMENT ON TABLE viewer_rollup_invalidations IS
    'Minutes of viewer_stats changed since the last rollup refresh (written by a row trigger)';

CREATE TABLE viewer_rollup_pending (
    granularity text        NOT NULL CHECK (granularity IN ('1h', '1d')),
    stream_id   uuid        NOT NULL,
    bucket      timestamptz NOT NULL,
    PRIMARY KEY (granularity, stream_id, bucket)
);
COMMENT ON TABLE viewer_rollup_pending IS
    'Hours and days with changed minutes of viewer_stats, recomputed once the bucket is complete';

-- Materialized buckets of all three granularities; analysts read viewer_experience_1m/1h/1d.
CREATE TABLE viewer_rollup (
    granularity           text             NOT NULL CHECK (granularity IN ('1m', '1h', '1d')),
    bucket                timestamptz      NOT NULL,
    stream_id             uuid             NOT NULL,
    views                 integer          NOT NULL,
    watch_time_ms         double precision NOT NULL,
    stall_time_ms         double precision NOT NULL,
    rebuffer_pct          double precision,
    stalls_per_minute     double precision,
    startup_ms_p50        double precision,
    startup_ms_p95        double precision,
    switches_per_view     double precision NOT NULL,
    failure_pct           double precision NOT NULL,
    exit_before_start_pct double precision NOT NULL,
    score                 double precision,
    PRIMARY KEY (granularity, stream_id, bucket)
);
CREATE INDEX viewer_rollup_bucket ON viewer_rollup (granularity, bucket);

COMMENT ON TABLE viewer_rollup IS 'Materialized viewer experience buckets; read viewer_experience_1m/1h/1d instead';

-- Log the minutes a change touches: the row's own and that of the view's next beacon (whose
-- difference to its predecessor changes); and refuse a beacon that does not fit between the
-- view's neighbouring beacons (viewer_stats_follows). BEFORE, as for stream_stats: rows of the
-- same statement processed earlier are visible, so a batch is checked in its (sorted) order.
CREATE FUNCTION viewer_stats_track() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    before_row viewer_stats;
    after_row  viewer_stats;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO viewer_rollup_invalidations (stream_id, minute, xact)
        VALUES (OLD.stream_id, time_bucket('1 minute', OLD.time), pg_current_xact_id())
        ON CONFLICT DO NOTHING;
        SELECT * INTO after_row FROM viewer_stats_after(OLD.view_id, OLD.time);
        IF after_row.view_id IS NOT NULL THEN
            INSERT INTO viewer_rollup_invalidations (stream_id, minute, xact)
            VALUES (after_row.stream_id, time_bucket('1 minute', after_row.time),
                    pg_current_xact_id())
            ON CONFLICT DO NOTHING;
        END IF;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    SELECT * INTO before_row FROM viewer_stats_before(NEW.view_id, NEW.time);
    SELECT * INTO after_row FROM viewer_stats_after(NEW.view_id, NEW.time);
    IF before_row.view_id IS NOT NULL THEN
        PERFORM viewer_stats_follows(before_row, NEW);
    END IF;
    IF after_row.view_id IS NOT NULL THEN
        PERFORM viewer_stats_follows(NEW, after_row);
        INSERT INTO viewer_rollup_invalidations (stream_id, minute, xact)
        VALUES (after_row.stream_id, time_bucket('1 minute', after_row.time), pg_current_xact_id())
        ON CONFLICT DO NOTHING;
    END IF;
    INSERT INTO viewer_rollup_invalidations (stream_id, minute, xact)
    VALUES (NEW.stream_id, time_bucket('1 minute', NEW.time), pg_current_xact_id())
    ON CONFLICT DO NOTHING;
    RETURN NEW;
END
$$;

CREATE TRIGGER viewer_stats_track
    BEFORE INSERT OR UPDATE OR DELETE ON viewer_stats
    FOR EACH ROW EXECUTE FUNCTION viewer_stats_track();

-- Threshold alerts gain rebuffering_high (raised by the `rebuffering` job).
ALTER TABLE stream_alerts DROP CONSTRAINT stream_alerts_type_check;
ALTER TABLE stream_alerts ADD CONSTRAINT stream_alerts_type_check
    CHECK (type IN ('packet_loss_high', 'fps_low', 'rebuffering_high'));

GRANT SELECT ON viewer_stats, viewer_views TO streamstats_analyst;
