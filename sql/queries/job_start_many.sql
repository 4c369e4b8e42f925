-- Record the start of jobs that started from a worker's buffer and are still running a
-- while later (START_REPORT_DELAY in pgqueue/_runtime/completer.py): from now on they read
-- `running` with their real start, their attempt is spent, and a kill -9 charges them a
-- rescue. A job that finishes sooner has its start recorded with its outcome instead, so a
-- short job costs no extra write. `ago` is seconds since each start, by the worker's clock.
-- Fenced by the lease, and a no-op for a row whose start is already recorded.
UPDATE {schema}.jobs AS j
   SET started_at = now() - make_interval(secs => c.ago),
       attempt = j.attempt + 1
  FROM unnest(%(ids)s::bigint[], %(leases)s::uuid[], %(agos)s::double precision[])
       AS c(id, lease, ago)
 WHERE j.id = c.id
   AND j.lease = c.lease
   AND j.started_at IS NULL
RETURNING j.id
