-- Record failed attempts: the worker decided per job (pure Python) whether it retries after
-- a delay or fails for good; this statement only applies that decision, fenced by the lease.
WITH failed AS (
    UPDATE {schema}.jobs AS j
       SET state = c.state,
           lease = NULL,
           run_at = CASE WHEN c.state = 'retrying'
                         THEN now() + make_interval(secs => c.delay)
                         ELSE j.run_at END,
           finished_at = CASE WHEN c.state IN ('failed', 'cancelled') THEN now() END,
           errors = j.errors || jsonb_build_array(
               c.error || jsonb_build_object(
                   'at', now(), 'attempt', j.attempt + (j.started_at IS NULL)::integer)),
           -- A run that started from the buffer: its start is recorded with its outcome
           -- (see the completion in job_claim.sql).
           attempt = j.attempt + (j.started_at IS NULL)::integer,
           started_at = coalesce(j.started_at, now() - make_interval(secs => c.began), now())
      FROM unnest(%(ids)s::bigint[], %(leases)s::uuid[], %(states)s::text[],
                  %(delays)s::double precision[], %(errors)s::jsonb[],
                  %(began)s::double precision[])
           AS c(id, lease, state, delay, error, began)
     WHERE j.id = c.id
       AND j.lease = c.lease  -- held only while running: see the completion in job_claim.sql
    RETURNING j.id
)
-- One wake-up per flush for `job.wait()` callers (folded per transaction by PostgreSQL).
SELECT id, pg_notify(%(done_channel)s, '') FROM failed
