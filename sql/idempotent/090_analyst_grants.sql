-- What the read-only analyst role (created in 0002) may read among the re-creatable objects.
-- Here rather than in a migration: a view that a migration drops and this folder re-creates
-- would otherwise come back without its grant.
GRANT SELECT ON stream_stats_1m, stream_stats_1h, stream_stats_1d TO streamstats_analyst;
GRANT SELECT ON viewer_experience_1m, viewer_experience_1h, viewer_experience_1d
    TO streamstats_analyst;
