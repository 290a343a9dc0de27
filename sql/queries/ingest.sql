-- Named queries of the Socket.IO ingest service (ingest/app.py, ingest/http.py).

-- ingest_latest --
-- The newest stored sample of one stream (one primary-key lookup, whatever the history size).
SELECT time, bitrate_kbps, fps, width, height, audio_level_db, packet_loss_pct, latency_ms,
       upload_kbps, download_kbps, quality
FROM stream_latest
WHERE stream_id = $1

-- ingest_ping --
-- Readiness: does the database answer?
SELECT 1
