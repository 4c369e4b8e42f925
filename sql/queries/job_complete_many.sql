-- Record successes in one statement per flush. The lease and state guard make a stale
-- worker's late completion (its job was rescued and re-claimed) a no-op; RETURNING tells
-- the caller which completions were accepted.
WITH done AS (
    UPDATE {schema}.jobs AS j
       SET state = 'completed',
           result = c.result,
           finished_at = now()
      FROM unnest(%(ids)s::bigint[], %(leases)s::uuid[], %(results)s::jsonb[])
           AS c(id, lease, result)
     WHERE j.id = c.id
       AND j.lease = c.lease
       AND j.state = 'running'
    RETURNING j.id
)
-- One wake-up per flush for `job.wait()` callers (folded per transaction by PostgreSQL).
SELECT id, pg_notify(%(done_channel)s, '') FROM done
