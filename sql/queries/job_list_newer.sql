-- The page of jobs just above `after` (the dashboard's "newer" link): the same filters as
-- `job_list.sql`, walking the primary key upwards from the bound, so it costs one page
-- whatever the depth. The caller turns the rows back to newest first.
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
 ORDER BY id
 LIMIT %(limit)s::integer
