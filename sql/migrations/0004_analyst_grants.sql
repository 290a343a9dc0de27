-- Analysts also read the alert episodes, bitrate drops and the report index (docs/analysts.md).
GRANT SELECT ON stream_alerts, bitrate_drops, stream_reports TO streamstats_analyst;
