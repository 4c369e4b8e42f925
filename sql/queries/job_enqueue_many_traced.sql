-- `job_enqueue_many.sql` with the caller's trace context: the same setting, set while the
-- arguments are evaluated and cleared per returned row (see `job_enqueue_traced.sql`).
SELECT id, set_config('pgqueue.trace_context', '', true) IS NULL AS kept
  FROM {schema}.enqueue_many(
           CASE WHEN set_config('pgqueue.trace_context', %(trace)s::text, true) IS NOT NULL
                THEN %(task)s::text END,
           %(args)s::jsonb, %(queue)s::text, %(priority)s::integer,
           coalesce(%(run_at)s::timestamptz, now() + make_interval(secs => %(delay)s::float8)),
           %(max_attempts)s::integer, %(timeout)s::double precision, %(group_key)s::text,
           coalesce(%(expires_at)s::timestamptz,
                    now() + make_interval(secs => %(expires_in)s::float8)))
