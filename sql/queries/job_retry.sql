-- Put a finished job back in line for one more attempt, now, and wake its queue's workers
-- in the same statement (the NOTIFY is delivered at commit).
WITH retried AS (
    UPDATE {schema}.jobs
       -- A workflow job whose dependencies are not all settled waits for them again.
       SET state = CASE WHEN waits_for > 0 THEN 'waiting' ELSE 'available' END,
           run_at = now(),
           max_attempts = greatest(max_attempts, attempt + 1),
           finished_at = NULL,
           lease = NULL,
           worker_id = NULL,
           cancel_requested = false
     WHERE id = %(id)s
       AND state IN ('failed', 'cancelled', 'retrying', 'scheduled')
    RETURNING id, queue
)
SELECT id, queue, pg_notify({schema}.notify_channel(), queue) FROM retried
