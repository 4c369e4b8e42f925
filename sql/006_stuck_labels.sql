-- The task monitor's labels name why a job is listed. A running job is admitted either for
-- its runtime (past 5 minutes, or past its own timeout) or for its history (rescued, or on
-- its third attempt or later); before this migration the second kind fell through the
-- runtime buckets to 'over timeout', so a job 2 s into a 600 s timeout read as overdue.
CREATE OR REPLACE VIEW stuck_jobs AS
SELECT j.id,
       j.task,
       j.queue,
       j.state,
       CASE
           WHEN j.state = 'running' AND now() - j.started_at > interval '45 minutes'
               THEN 'over 45 min'
           WHEN j.state = 'running' AND now() - j.started_at > interval '10 minutes'
               THEN 'over 10 min'
           WHEN j.state = 'running' AND now() - j.started_at > interval '5 minutes'
               THEN 'over 5 min'
           WHEN j.state = 'running' AND j.timeout IS NOT NULL
                AND j.started_at < now() - make_interval(secs => j.timeout)
               THEN 'over timeout'
           WHEN j.rescue_count > 0 THEN 'rescued ' || j.rescue_count || 'x'
           ELSE 'retried ' || greatest(j.attempt - 1, 0) || 'x'
       END AS bucket,
       j.attempt,
       j.max_attempts,
       j.rescue_count,
       j.started_at,
       CASE WHEN j.state = 'running'
            THEN extract(epoch FROM now() - j.started_at)::double precision END
           AS running_seconds,
       j.timeout,
       CASE WHEN w.id IS NOT NULL THEN w.hostname || ':' || w.pid
            ELSE j.worker_id::text END AS worker,
       coalesce(w.stopped_at IS NULL
                AND w.heartbeat_at > now() - make_interval(secs => w.heartbeat_timeout), false)
           AS worker_alive
  FROM jobs AS j
  LEFT JOIN workers AS w ON w.id = j.worker_id
 WHERE (j.state = 'running'
        AND (j.started_at < now() - interval '5 minutes'
             OR (j.timeout IS NOT NULL
                 AND j.started_at < now() - make_interval(secs => j.timeout))))
    OR (j.state IN ('scheduled', 'available', 'running', 'retrying')
        AND (j.rescue_count > 0 OR j.attempt >= 3));
