-- Claim up to `limit` due jobs for one worker.
--
-- The candidates CTE is MATERIALIZED so the LIMIT is applied exactly once: inlined into
-- `WHERE id IN (...)` the planner may re-run it per outer row and lock more than asked.
-- The state literals repeat the partial index predicate of jobs_claim_idx, so even a generic
-- plan can use it. SKIP LOCKED lets concurrent workers take disjoint rows without waiting.
-- Each claim gets a fresh lease: every later change to the row must present it.
-- Jobs that were running when a worker died (rescue_count > 0) are suspects: they are claimed
-- only with `suspects` true, one at a time, by an idle worker that then runs nothing else,
-- so a job that kills its process cannot take innocent jobs down with it.
WITH candidates AS MATERIALIZED (
    SELECT id
      FROM {schema}.jobs
     WHERE state IN ('scheduled', 'available', 'retrying')
       AND run_at <= now()
       AND (%(all_queues)s::boolean OR queue = ANY(%(queues)s::text[]))
       AND (rescue_count > 0) = %(suspects)s::boolean
       -- Paused queues: checked here, in the claim itself, so a pause takes effect across
       -- every worker process at their next claim.
       AND NOT EXISTS (SELECT 1 FROM {schema}.queues AS q
                        WHERE q.name = jobs.queue AND q.paused)
     ORDER BY priority DESC, run_at, id
     LIMIT %(limit)s::integer
       FOR UPDATE SKIP LOCKED
)
UPDATE {schema}.jobs AS j
   SET state = 'running',
       attempt = j.attempt + 1,
       lease = gen_random_uuid(),
       worker_id = %(worker_id)s::uuid,
       started_at = now()
  FROM candidates AS c
 WHERE j.id = c.id
RETURNING j.id, j.task, j.queue, j.args, j.attempt, j.max_attempts, j.lease, j.timeout
