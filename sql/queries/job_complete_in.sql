-- `ctx.complete(conn=...)`: complete the job inside the caller's transaction, fenced by the
-- run's lease. No row back means the lease is gone (the job was rescued and claimed again):
-- the caller raises LeaseLost and its transaction, effect included, rolls back. The worker's
-- own completion after the task returns then matches no lease and changes nothing.
WITH done AS (
    UPDATE {schema}.jobs AS j
       SET state = 'completed',
           lease = NULL,
           result = %(result)s::jsonb,
           finished_at = now(),
           attempt = j.attempt + (j.started_at IS NULL)::integer,
           started_at = coalesce(j.started_at, now())
     WHERE j.id = %(id)s::bigint
       AND j.lease = %(lease)s::uuid
    RETURNING j.id
)
SELECT id, pg_notify(%(done_channel)s, '') FROM done
