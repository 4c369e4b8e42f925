-- Runs that suspend rather than end: a parent waiting for its children (`gather`), a durable
-- sleep, a snooze. The run spends no attempt (a start recorded by the claim is taken back),
-- frees its slot and lease, and the job waits: `waiting` while it has unsettled children
-- (the last child to end makes it available), `scheduled` until `delay` seconds from now for
-- a sleep or snooze, or straight back to `available` if its children ended meanwhile.
-- Fenced by the lease.
WITH suspended AS (
    UPDATE {schema}.jobs AS j
       SET state = CASE WHEN c.delay IS NOT NULL THEN 'scheduled'
                        WHEN j.waits_for > 0 THEN 'waiting'
                        ELSE 'available' END,
           run_at = CASE WHEN c.delay IS NOT NULL THEN now() + make_interval(secs => c.delay)
                         ELSE j.run_at END,
           attempt = greatest(j.attempt - (j.started_at IS NOT NULL)::integer, 0),
           started_at = NULL,
           lease = NULL
      FROM unnest(%(ids)s::bigint[], %(leases)s::uuid[], %(delays)s::double precision[])
           AS c(id, lease, delay)
     WHERE j.id = c.id
       AND j.lease = c.lease
    RETURNING j.id, j.state, j.queue
)
SELECT id, state, CASE WHEN state = 'available'
                       THEN pg_notify({schema}.notify_channel(), queue) END
  FROM suspended
