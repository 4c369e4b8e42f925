-- The page of jobs just above `after` (the dashboard's "newer" link): the same filters as
-- `job_list.sql`, rendered per state the same way, walking the primary key upwards from the
-- bound, so it costs one page whatever the depth. The caller turns the rows back to newest
-- first.
SELECT j.id, j.task, j.queue,
       CASE WHEN j.state = 'scheduled' AND j.run_at <= now() THEN 'available'
            WHEN j.state = 'running' AND j.started_at IS NULL THEN 'claimed'
            ELSE j.state END AS state,
       j.priority, j.attempt, j.max_attempts,
       CASE WHEN jsonb_array_length(j.errors) > 0
            THEN (j.errors -> -1 ->> 'type') || ': ' || (j.errors -> -1 ->> 'message')
       END AS last_error,
       j.created_at, j.run_at, j.started_at, j.finished_at,
       CASE WHEN w.id IS NOT NULL THEN w.hostname || ':' || w.pid
            ELSE j.worker_id::text END AS worker,
       nullif(j.group_key, '') AS group_key
  FROM {schema}.jobs AS j
  LEFT JOIN {schema}.workers AS w ON w.id = j.worker_id
 WHERE j.id < coalesce(%(before)s::bigint, 9223372036854775807)
   AND j.id > coalesce(%(after)s::bigint, 0)
   AND {state_filter}
   AND (%(queue)s::text IS NULL OR j.queue = %(queue)s::text)
   AND (%(task)s::text IS NULL OR j.task = %(task)s::text)
   AND (%(group_key)s::text IS NULL OR j.group_key = %(group_key)s::text)
   AND (%(topic)s::text IS NULL OR j.topic = %(topic)s::text)
   AND (%(schedule)s::text IS NULL OR j.schedule = %(schedule)s::text)
   AND (%(older_than)s::float8 IS NULL
        OR j.created_at < now() - make_interval(secs => %(older_than)s::float8))
   AND (%(newer_than)s::float8 IS NULL
        OR j.created_at > now() - make_interval(secs => %(newer_than)s::float8))
 ORDER BY j.id
 LIMIT %(limit)s::integer
