-- Give back the jobs of workers that stopped heartbeating (killed, OOM, lost power, cut off)
-- or that exited without releasing them. Each worker is judged by the heartbeat timeout it
-- registered with, not by the leader's.
--
-- A rescue counts against the job: past `max_rescues` it is failed as a poison job (it keeps
-- killing its worker). Otherwise it waits a short, growing backoff and runs again, its next
-- claim bumping `attempt`; a job that only shared a process with a poison job is not failed
-- for attempts it never got to finish. The new state
-- clears the lease, so the lost worker's late outcome (if it was only cut off) changes nothing.
--
-- A job the dead worker had claimed but not started (started_at NULL: it waited in the
-- buffer) is charged nothing: it goes back `available` at its place in line, attempt and
-- rescue count as they were, with no error entry. Its start may have happened within the
-- worker's report delay, though, so it is marked maybe_started: its next claim records the
-- start at once, and if it was the killer, the next death is charged.
WITH dead AS (
    SELECT j.id
      FROM {schema}.jobs AS j
     WHERE j.state = 'running'
       AND NOT EXISTS (
               SELECT 1 FROM {schema}.workers AS w
                WHERE w.id = j.worker_id
                  AND w.stopped_at IS NULL
                  AND w.heartbeat_at > now() - make_interval(secs => w.heartbeat_timeout))
     ORDER BY j.id
     LIMIT 1000
       FOR UPDATE OF j SKIP LOCKED
)
UPDATE {schema}.jobs AS j
   SET state = CASE WHEN j.started_at IS NULL THEN 'available'
                    WHEN j.rescue_count + 1 > %(max_rescues)s::int THEN 'failed'
                    ELSE 'retrying' END,
       rescue_count = j.rescue_count + (j.started_at IS NOT NULL)::integer,
       maybe_started = j.started_at IS NULL,
       run_at = CASE WHEN j.started_at IS NULL THEN j.run_at
                     ELSE now() + make_interval(secs => least(power(2, j.rescue_count), 60))
                END,
       finished_at = CASE WHEN j.started_at IS NOT NULL
                           AND j.rescue_count + 1 > %(max_rescues)s::int THEN now() END,
       lease = NULL,
       errors = CASE WHEN j.started_at IS NULL THEN j.errors
                     ELSE j.errors || jsonb_build_array(jsonb_build_object(
           'type', 'WorkerLost',
           'message', CASE WHEN j.rescue_count + 1 > %(max_rescues)s::int
                           THEN format('poison job: its worker died %%s times while running it',
                                       j.rescue_count + 1)
                           ELSE 'the worker running this job stopped heartbeating' END,
           'kind', 'rescue',
           'worker', j.worker_id,
           'attempt', j.attempt,
           'at', now())) END
  FROM dead
 WHERE j.id = dead.id
RETURNING j.id, j.state, j.queue
