-- Named queries of the quality advisor (ingest/advice.py).

-- advice_states --
-- The advisor state of streams ($1: uuid[]) at their last advice, with its version (no row: never advised).
SELECT stream_id, version, state FROM stream_advisor_state WHERE stream_id = ANY($1::uuid[])

-- advice_record --
-- Store an advice and the state after it, if the state is still at version $3 (0: none yet).
-- No row back: another node advised the stream first, nothing was stored.
WITH claimed AS (
    INSERT INTO stream_advisor_state AS s (stream_id, version, state)
    VALUES ($1, $3 + 1, $4)
    ON CONFLICT (stream_id) DO UPDATE
    SET version = s.version + 1, state = EXCLUDED.state, updated_at = now()
    WHERE s.version = $3
    RETURNING version
)
INSERT INTO stream_advice (stream_id, issued_at, action, target, reasons, severity, basis)
SELECT $1, $2, $5, $6, $7, $8, $9 FROM claimed
RETURNING id, (SELECT version FROM claimed) AS version

-- advice_delete_before --
-- Retention of advice: delete what was issued before $1 (kept as long as 1-minute rollups).
DELETE FROM stream_advice WHERE issued_at < $1::timestamptz

-- advice_applied --
-- Record what the streamer applied of advice $1 of stream $2; no row back: no such advice.
UPDATE stream_advice SET applied_at = now(), applied = $3
WHERE id = $1 AND stream_id = $2
RETURNING id
