-- Named queries of the /metrics page: `-- name --`, then a one-line description.

-- job_last_successes --
-- Per job, when its last successful run finished and how long it took (seconds).
SELECT DISTINCT ON (job) job, finished_at,
       extract(epoch FROM finished_at - started_at)::double precision AS duration_s
FROM job_runs
WHERE status = 'ok' AND finished_at IS NOT NULL
ORDER BY job, finished_at DESC
