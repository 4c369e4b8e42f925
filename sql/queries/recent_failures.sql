SELECT id, task, queue, state, attempt, last_error, finished_at
  FROM {schema}.job_status
 WHERE last_error IS NOT NULL
   AND id IN (SELECT id FROM {schema}.jobs
               WHERE state IN ('failed', 'retrying')
               ORDER BY id DESC LIMIT %(limit)s::integer)
 ORDER BY id DESC
