-- What a streamer reported applying of an advice (`stream:quality:applied`, docs/protocol.md).

ALTER TABLE stream_advice
    ADD COLUMN applied_at timestamptz,
    ADD COLUMN applied    jsonb;

COMMENT ON COLUMN stream_advice.applied_at IS 'When the streamer reported applying the advice (NULL: not reported)';
COMMENT ON COLUMN stream_advice.applied IS '{maxBitrate (bps), scaleResolutionDownBy, maxFramerate} as the streamer set them';
