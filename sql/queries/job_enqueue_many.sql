-- A whole chunk of one enqueue_many call in one statement, through the same SQL function
-- SQL clients use (005_one_enqueue_path.sql), so defaults, state rule and wake-up match
-- single enqueue: a NULL queue or max_attempts means the database's default, and the
-- function notifies the queue's workers itself (once per transaction however many chunks).
-- Every job of the call shares its task and options, so those are single parameters, and the
-- arguments arrive as one JSON array: the client joins already-encoded texts instead of
-- adapting a list element by element, and the server parses one document. Two parameters
-- carry the chunk whatever its size, so the 65,535-parameter limit never applies. The ids
-- come back in the array's order. A delay (and an expiry in seconds) is added to the database clock, never to the
-- client's.
SELECT id
  FROM {schema}.enqueue_many(
           %(task)s::text, %(args)s::jsonb, %(queue)s::text, %(priority)s::integer,
           coalesce(%(run_at)s::timestamptz, now() + make_interval(secs => %(delay)s::float8)),
           %(max_attempts)s::integer, %(timeout)s::double precision, %(group_key)s::text,
           coalesce(%(expires_at)s::timestamptz,
                    now() + make_interval(secs => %(expires_in)s::float8)))
