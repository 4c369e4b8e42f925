-- Waiting jobs of one task whose arguments contain `args` (pgqueue.testing).
SELECT id, task, queue, args, state, run_at, priority
  FROM {schema}.jobs
 WHERE task = %(task)s
   AND state IN ('scheduled', 'available', 'retrying')
   AND args @> %(args)s::jsonb
   AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
 ORDER BY id
