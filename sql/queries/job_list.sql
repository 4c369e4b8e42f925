-- Jobs for `pgqueue jobs` and the dashboard, newest first, each filter optional.
--
-- Keyset pagination: a page continues below the smallest id of the page before
-- (`before`), so a deep page costs what the first one does; an OFFSET would read and drop
-- every row above it. The bounds are written with coalesce, never as "the bound IS NULL OR
-- id < the bound": under a generic plan (psycopg prepares a statement after a few
-- executions) only a plain comparison is an index condition on the primary key; the OR form
-- is a filter applied row by row from the newest job down.
--
-- The columns are the `job_status` view's, read from the table itself so that the state
-- filter is literal SQL on `jobs.state`, rendered once per state (see _LIST_STATES in
-- pgqueue/_db/queries.py): only a literal predicate lets the planner use a partial index
-- under a generic plan, so a rare state is found through its index (jobs_failed_idx for
-- failed and cancelled, the claim and running indexes for live states) instead of by walking
-- every newer job.
--
-- Rendered twice per state (see _VARIANTS): `job_list*` newest first, and `job_list_newer*`
-- (the dashboard's "newer" link: the page just above `after`) walking the primary key up
-- from the bound, so it costs one page whatever the depth; its caller turns the rows back to
-- newest first.
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
 ORDER BY j.id {direction}
 LIMIT %(limit)s::integer
