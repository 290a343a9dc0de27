-- Named queries of `streamstats export` (streamstats/export.py): the rollup views in time order.

-- export_1m --
-- `streamstats export`: stream_stats_1m in [$1, $2) of the streams $3 (all when NULL), by time.
SELECT * FROM stream_stats_1m
WHERE bucket >= $1 AND bucket < $2 AND ($3::uuid[] IS NULL OR stream_id = ANY($3::uuid[]))
ORDER BY bucket, stream_id

-- export_1h --
-- `streamstats export`: stream_stats_1h in [$1, $2) of the streams $3 (all when NULL), by time.
SELECT * FROM stream_stats_1h
WHERE bucket >= $1 AND bucket < $2 AND ($3::uuid[] IS NULL OR stream_id = ANY($3::uuid[]))
ORDER BY bucket, stream_id

-- export_1d --
-- `streamstats export`: stream_stats_1d in [$1, $2) of the streams $3 (all when NULL), by time.
SELECT * FROM stream_stats_1d
WHERE bucket >= $1 AND bucket < $2 AND ($3::uuid[] IS NULL OR stream_id = ANY($3::uuid[]))
ORDER BY bucket, stream_id
