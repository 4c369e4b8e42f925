-- Cancel every unfinished job matching the filters (each optional): those not running end
-- `cancelled` at once; running ones are asked to stop, as `job_cancel.sql` does for one.
-- Works through the claim indexes' states, newest filters first; returns each job's id and
-- whether it was running (only asked to stop).
UPDATE {schema}.jobs
   SET state = CASE WHEN state = 'running' THEN state ELSE 'cancelled' END,
       finished_at = CASE WHEN state = 'running' THEN finished_at ELSE now() END,
       cancel_requested = true
 WHERE state IN ('scheduled', 'available', 'retrying', 'running', 'waiting')
   AND (%(state)s::text IS NULL OR state = %(state)s::text)
   AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
   AND (%(task)s::text IS NULL OR task = %(task)s::text)
RETURNING id, state = 'running' AS running
