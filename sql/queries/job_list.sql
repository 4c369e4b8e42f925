-- Jobs for `pgqueue jobs`, newest first, each filter optional.
SELECT id, task, queue, state, priority, attempt, max_attempts, last_error, created_at,
       run_at, started_at, finished_at, worker, group_key
  FROM {schema}.job_status
 WHERE (%(state)s::text IS NULL OR state = %(state)s::text)
   AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
   AND (%(task)s::text IS NULL OR task = %(task)s::text)
   AND (%(group_key)s::text IS NULL OR group_key = %(group_key)s::text)
   AND (%(older_than)s::float8 IS NULL
        OR created_at < now() - make_interval(secs => %(older_than)s::float8))
   AND (%(newer_than)s::float8 IS NULL
        OR created_at > now() - make_interval(secs => %(newer_than)s::float8))
 ORDER BY id DESC
 LIMIT %(limit)s::integer
