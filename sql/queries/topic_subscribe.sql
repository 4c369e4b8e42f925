-- Subscribe tasks to topic patterns (arrays in: one statement for a worker's declared
-- topics too). Idempotent: an existing subscription changes only if its options did.
INSERT INTO {schema}.topic_subscriptions AS s (pattern, task, queue, priority, max_attempts)
SELECT r.pattern, r.task, r.queue, r.priority, r.max_attempts
  FROM unnest(%(patterns)s::text[], %(tasks)s::text[], %(queues)s::text[],
              %(priorities)s::integer[], %(max_attempts)s::integer[])
       AS r(pattern, task, queue, priority, max_attempts)
ON CONFLICT (pattern, task) DO UPDATE
   SET queue = EXCLUDED.queue, priority = EXCLUDED.priority,
       max_attempts = EXCLUDED.max_attempts
 WHERE (s.queue, s.priority, s.max_attempts)
       IS DISTINCT FROM (EXCLUDED.queue, EXCLUDED.priority, EXCLUDED.max_attempts)
