-- Jobs for `pgqueue jobs` and the dashboard, newest first, each filter optional.
--
-- Keyset pagination: a page continues below the smallest id of the page before
-- (`before`), so a deep page costs what the first one does; an OFFSET would read and drop
-- every row above it. The bounds are written with coalesce, never as "the bound IS NULL OR
-- id < the bound": under a generic plan (psycopg prepares a statement after a few
-- executions) only a plain comparison is an index condition on the primary key; the OR form
-- is a filter applied row by row from the newest job down.
SELECT id, task, queue, state, priority, attempt, max_attempts, last_error, created_at,
       run_at, started_at, finished_at, worker
  FROM {schema}.job_status
 WHERE id < coalesce(%(before)s::bigint, 9223372036854775807)
   AND id > coalesce(%(after)s::bigint, 0)
   AND (%(state)s::text IS NULL OR state = %(state)s::text)
   AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
   AND (%(task)s::text IS NULL OR task = %(task)s::text)
   AND (%(older_than)s::float8 IS NULL
        OR created_at < now() - make_interval(secs => %(older_than)s::float8))
   AND (%(newer_than)s::float8 IS NULL
        OR created_at > now() - make_interval(secs => %(newer_than)s::float8))
 ORDER BY id DESC
 LIMIT %(limit)s::integer
