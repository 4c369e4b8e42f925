-- Cancel a job: one that has not started becomes `cancelled` at once; a running one is only
-- flagged, and its worker cancels the run at its next heartbeat. Returns the job's state.
-- A workflow job's dependents and spawned children follow (job_settle_dependents).
UPDATE {schema}.jobs
   SET state = CASE WHEN state = 'running' THEN state ELSE 'cancelled' END,
       finished_at = CASE WHEN state = 'running' THEN finished_at ELSE now() END,
       cancel_requested = true
 WHERE id = %(id)s
   AND state IN ('scheduled', 'available', 'retrying', 'running', 'waiting')
RETURNING id, state
