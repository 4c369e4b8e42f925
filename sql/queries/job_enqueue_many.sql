-- A whole chunk in one statement: eight array parameters whatever the chunk size, so the
-- 65,535-parameter limit never applies. WITH ORDINALITY plus ORDER BY makes the identity
-- values follow the caller's order, so ids can be matched back to inputs. Delays are added
-- to the database clock.
INSERT INTO {schema}.jobs (task, args, queue, priority, run_at, max_attempts, timeout, state)
SELECT t.task, t.args, t.queue, t.priority, t.run_at, t.max_attempts, t.timeout,
       CASE WHEN t.run_at <= now() THEN 'available' ELSE 'scheduled' END
  FROM (
        SELECT u.task, u.args, u.queue, u.priority,
               coalesce(u.run_at, now() + make_interval(secs => coalesce(u.delay, 0)))
                   AS run_at,
               coalesce(u.max_attempts, 3) AS max_attempts, u.timeout, u.ord
          FROM unnest(%(tasks)s::text[], %(args)s::jsonb[], %(queues)s::text[],
                      %(priorities)s::int[], %(run_ats)s::timestamptz[],
                      %(delays)s::float8[], %(max_attempts)s::int[],
                      %(timeouts)s::float8[])
               WITH ORDINALITY
               AS u(task, args, queue, priority, run_at, delay, max_attempts, timeout, ord)
       ) AS t
 ORDER BY t.ord
RETURNING id
