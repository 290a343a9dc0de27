-- Named queries of the /metrics page: `-- name --`, then a one-line description.

-- job_last_successes --
-- Per job, when its last successful run finished and how long it took (index skip-scan: cheap however long job_runs grows).
WITH RECURSIVE jobs AS (
    (SELECT job FROM job_runs ORDER BY job LIMIT 1)
    UNION ALL
    SELECT (SELECT r.job FROM job_runs r WHERE r.job > jobs.job ORDER BY r.job LIMIT 1)
    FROM jobs
    WHERE jobs.job IS NOT NULL
)
SELECT jobs.job, last.finished_at, last.duration_s
FROM jobs
CROSS JOIN LATERAL (
    SELECT r.finished_at,
           extract(epoch FROM r.finished_at - r.started_at)::double precision AS duration_s
    FROM job_runs r
    WHERE r.job = jobs.job AND r.status = 'succeeded' AND r.finished_at IS NOT NULL
    ORDER BY r.started_at DESC
    LIMIT 1
) AS last
WHERE jobs.job IS NOT NULL
