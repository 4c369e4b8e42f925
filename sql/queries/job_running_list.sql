-- Running jobs with the worker running each (the dashboard's workers page), read through
-- the partial index of running jobs, so its cost follows the number running, not the table.
SELECT id, task, queue, attempt, max_attempts, started_at, worker_id,
       extract(epoch FROM now() - started_at)::double precision AS running_seconds,
       cancel_requested
  FROM {schema}.jobs
 WHERE state = 'running'
 ORDER BY started_at, id
 LIMIT %(limit)s::integer
