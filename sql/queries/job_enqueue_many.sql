-- A whole chunk of one enqueue_many call in one statement. Every job of the call shares its
-- task and options, so those are single parameters, and the arguments arrive as one JSON
-- array: the client joins already-encoded texts instead of adapting a list element by
-- element, and the server parses one document. Two parameters carry the chunk whatever its
-- size, so the 65,535-parameter limit never applies. WITH ORDINALITY plus ORDER BY makes the
-- identity values follow the caller's order, so ids can be matched back to inputs. A delay
-- is added to the database clock.
INSERT INTO {schema}.jobs (task, args, queue, priority, run_at, max_attempts, timeout, state)
SELECT %(task)s::text, a.args, %(queue)s::text, %(priority)s::integer, r.run_at,
       coalesce(%(max_attempts)s::integer, 3), %(timeout)s::double precision,
       CASE WHEN r.run_at <= now() THEN 'available' ELSE 'scheduled' END
  FROM (SELECT coalesce(%(run_at)s::timestamptz,
                        now() + make_interval(secs => coalesce(%(delay)s::double precision, 0)))
               AS run_at) AS r,
       jsonb_array_elements(%(args)s::jsonb) WITH ORDINALITY AS a(args, ord)
 ORDER BY a.ord
RETURNING id
