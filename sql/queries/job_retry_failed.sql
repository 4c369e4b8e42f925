-- Every failed job (of one queue and one task, each if given) back in line, now, except those
-- whose unique_key another job holds (failed_to_retry, migration 019); PostgreSQL folds the
-- notifications into one per queue at commit.
WITH retried AS (
    UPDATE {schema}.jobs
       SET state = CASE WHEN waits_for > 0 THEN 'waiting' ELSE 'available' END,
           run_at = now(),
           -- fresh: a full attempt budget again (after an outage that failed them all);
           -- otherwise one more attempt than they have had.
           attempt = CASE WHEN %(fresh)s::boolean THEN 0 ELSE attempt END,
           max_attempts = CASE WHEN %(fresh)s::boolean THEN max_attempts
                               ELSE greatest(max_attempts, attempt + 1) END,
           finished_at = NULL,
           lease = NULL,
           worker_id = NULL,
           cancel_requested = false
     WHERE id IN (SELECT {schema}.failed_to_retry(%(queue)s::text, %(task)s::text))
       AND state = 'failed'
    RETURNING id, queue
)
SELECT id, queue, pg_notify({schema}.notify_channel(), queue) FROM retried
