-- One job through the same function SQL clients use, so defaults, dedupe and NOTIFY match.
-- A delay (and an expiry given in seconds) is added to the database clock, never to the
-- client's.
SELECT id, duplicate
  FROM {schema}.enqueue_job(
           %(task)s, %(args)s::jsonb, %(queue)s, %(priority)s,
           coalesce(%(run_at)s::timestamptz, now() + make_interval(secs => %(delay)s::float8)),
           %(unique_key)s, %(max_attempts)s, %(timeout)s::double precision,
           %(group_key)s::text,
           coalesce(%(expires_at)s::timestamptz,
                    now() + make_interval(secs => %(expires_in)s::float8)))
