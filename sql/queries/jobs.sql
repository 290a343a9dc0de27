-- The job runner's bookkeeping (jobs/runner.py, jobs/locks.py): advisory locks and job_runs.

-- job_try_lock --
-- Take the session advisory lock of job $1 if nobody holds it; true when taken.
SELECT pg_try_advisory_lock(hashtextextended('streamstats.job:' || $1::text, 0))

-- job_unlock --
-- Release the session advisory lock of job $1.
SELECT pg_advisory_unlock(hashtextextended('streamstats.job:' || $1::text, 0))

-- job_runs_abandon --
-- Whoever holds job $1's lock may close runs left 'running' by a runner that died mid-run.
UPDATE job_runs
SET status = 'failed', finished_at = clock_timestamp(),
    error = 'the job runner stopped before the run finished'
WHERE job = $1 AND status = 'running'

-- job_run_start --
-- Record the start of a run of job $1 for tick $2 (NULL: on demand); no row if the tick already ran.
INSERT INTO job_runs (job, scheduled_for)
VALUES ($1, $2)
ON CONFLICT (job, scheduled_for) WHERE scheduled_for IS NOT NULL DO NOTHING
RETURNING id

-- job_run_finish --
-- Record how run $1 ended: status $2, rows $3, error $4.
UPDATE job_runs
SET finished_at = clock_timestamp(), status = $2, rows = $3, error = $4
WHERE id = $1
