-- Named queries of the batch writer (ingest/writer.py): one flush = one transaction.

-- write_batch --
-- Insert a batch idempotently on (stream_id, time), move stream_latest forward, return the rows inserted.
WITH input AS (
    SELECT *
    FROM unnest(
        $1::timestamptz[], $2::uuid[], $3::float8[], $4::float8[], $5::int4[], $6::int4[],
        $7::float8[], $8::float8[], $9::float8[], $10::float8[], $11::float8[], $12::text[]
    ) AS t(time, stream_id, bitrate_kbps, fps, width, height, audio_level_db,
           packet_loss_pct, latency_ms, upload_kbps, download_kbps, quality)
),
inserted AS (
    INSERT INTO stream_stats (time, stream_id, bitrate_kbps, fps, width, height, audio_level_db,
                              packet_loss_pct, latency_ms, upload_kbps, download_kbps, quality,
                              received_at)
    SELECT input.*, now() FROM input
    ON CONFLICT (stream_id, time) DO NOTHING
    RETURNING *
),
latest AS (
    -- Only rows this batch stored: a resent duplicate never overwrites what is stored. Sorted by
    -- stream so concurrent writers (several ingest nodes) lock stream_latest rows in one order.
    INSERT INTO stream_latest (stream_id, time, bitrate_kbps, fps, width, height, audio_level_db,
                               packet_loss_pct, latency_ms, upload_kbps, download_kbps, quality,
                               received_at)
    SELECT DISTINCT ON (stream_id)
           stream_id, time, bitrate_kbps, fps, width, height, audio_level_db,
           packet_loss_pct, latency_ms, upload_kbps, download_kbps, quality, received_at
    FROM inserted
    ORDER BY stream_id, time DESC
    ON CONFLICT (stream_id) DO UPDATE
    SET time = EXCLUDED.time,
        bitrate_kbps = EXCLUDED.bitrate_kbps,
        fps = EXCLUDED.fps,
        width = EXCLUDED.width,
        height = EXCLUDED.height,
        audio_level_db = EXCLUDED.audio_level_db,
        packet_loss_pct = EXCLUDED.packet_loss_pct,
        latency_ms = EXCLUDED.latency_ms,
        upload_kbps = EXCLUDED.upload_kbps,
        download_kbps = EXCLUDED.download_kbps,
        quality = EXCLUDED.quality,
        received_at = EXCLUDED.received_at
    WHERE stream_latest.time < EXCLUDED.time
)
SELECT stream_id, time FROM inserted

-- writer_probe --
-- A cheap round trip: is the database reachable again, and can the writer store rows there?
SELECT current_setting('transaction_read_only') = 'off'
       AND to_regclass('stream_stats') IS NOT NULL
       AND to_regclass('stream_latest') IS NOT NULL
