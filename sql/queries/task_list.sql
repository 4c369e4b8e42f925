-- The task catalog (`pgqueue tasks`), with how many of each task's jobs are waiting.
SELECT t.name, coalesce(t.queue, {schema}.default_queue()) AS queue,
       coalesce(t.priority, 0) AS priority,
       coalesce(t.max_attempts, {schema}.default_max_attempts()) AS max_attempts,
       t.timeout, t.registered_by, t.updated_at
  FROM {schema}.tasks AS t
 ORDER BY t.name
