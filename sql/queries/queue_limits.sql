-- Rows of the queue_limits view (every queue, or one): the queue's row first, then its busy
-- groups.
SELECT queue, group_key, concurrency, running, rate, starts, tokens, waiting, fair,
       max_depth, paused
  FROM {schema}.queue_limits
 WHERE %(queue)s::text IS NULL OR queue = %(queue)s::text
 ORDER BY queue, group_key NULLS FIRST
