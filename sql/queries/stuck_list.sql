SELECT id, task, queue, state, bucket, attempt, max_attempts, rescue_count, started_at,
       running_seconds, timeout, worker, worker_alive
  FROM {schema}.stuck_jobs
 ORDER BY running_seconds DESC NULLS LAST, id
 LIMIT %(limit)s::integer
