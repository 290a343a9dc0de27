-- Named queries about the schema itself: `-- name --`, then a one-line description.

-- timescaledb_license --
-- The TimescaleDB edition in use: apache or timescale.
SELECT current_setting('timescaledb.license', true) AS license,
       (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb') AS version
