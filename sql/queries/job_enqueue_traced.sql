-- `job_enqueue.sql` with the caller's trace context (OpenTelemetry), chosen only when a span
-- is active, so the plain enqueue statement is untouched. The context travels in the
-- transaction-local setting that the `jobs.trace` column defaults from (009): set while the
-- function's arguments are evaluated, so before its INSERT; cleared again in the select
-- list, evaluated per returned row after the function ran, so a later enqueue in the
-- caller's transaction does not inherit it. On an autocommit connection it ends with the
-- statement anyway.
SELECT id, duplicate, set_config('pgqueue.trace_context', '', true) IS NULL AS kept
  FROM {schema}.enqueue_job(
           CASE WHEN set_config('pgqueue.trace_context', %(trace)s::text, true) IS NOT NULL
                THEN %(task)s::text END,
           %(args)s::jsonb, %(queue)s, %(priority)s,
           coalesce(%(run_at)s::timestamptz, now() + make_interval(secs => %(delay)s::float8)),
           %(unique_key)s, %(max_attempts)s, %(timeout)s::double precision,
           %(group_key)s::text,
           coalesce(%(expires_at)s::timestamptz,
                    now() + make_interval(secs => %(expires_in)s::float8)))
