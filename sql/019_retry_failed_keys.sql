-- A bulk retry of failed jobs leaves alone those whose unique_key another job holds.
--
-- Why: `retry_failed` put every failed job of its filter back in line in one UPDATE. Two
-- failed jobs that share a unique_key (the second enqueued after the first had failed,
-- which the key allows), or a failed job whose key a newer unfinished job already holds,
-- made that UPDATE break the unique index, and the whole retry failed with nothing retried.
-- Now the retry takes, of each key, only the newest failed job, and only when no
-- unfinished job holds the key; the others stay failed (a per-job `retry` of one of them
-- still says why it cannot run). `count_failed` counts the same set, so what the CLI and
-- the dashboard announce is what is retried.

-- The failed jobs a bulk retry of these filters (each optional) puts back in line. Internal.
CREATE FUNCTION failed_to_retry(p_queue text, p_task text) RETURNS SETOF bigint
    LANGUAGE sql STABLE SET search_path FROM CURRENT
AS $$
    SELECT DISTINCT ON (j.unique_key IS NULL, coalesce(j.unique_key, j.id::text)) j.id
      FROM jobs AS j
     WHERE j.state = 'failed'
       AND (p_queue IS NULL OR j.queue = p_queue)
       AND (p_task IS NULL OR j.task = p_task)
       AND (j.unique_key IS NULL OR NOT EXISTS (
               SELECT 1 FROM jobs AS h
                WHERE h.unique_key = j.unique_key
                  AND h.state IN ('scheduled', 'available', 'running', 'retrying', 'waiting')))
     ORDER BY j.unique_key IS NULL, coalesce(j.unique_key, j.id::text), j.id DESC
$$;
