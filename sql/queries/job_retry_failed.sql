-- Every failed job (of one queue, if given) back in line, now.
UPDATE {schema}.jobs
   SET state = 'available',
       run_at = now(),
       max_attempts = greatest(max_attempts, attempt + 1),
       finished_at = NULL,
       lease = NULL,
       worker_id = NULL,
       cancel_requested = false
 WHERE state = 'failed'
   AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
RETURNING id, queue
