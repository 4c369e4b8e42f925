-- Claimed is not started. A worker claims a few jobs ahead of its free slots (its prefetch
-- buffer, so the next claim's round trip overlaps running jobs); until now every claimed row
-- read `running`, with started_at and the attempt set at claim time. A -c 1 worker then showed
-- two running jobs, a 3 s task that waited 3 s in the buffer recorded 6 s, and a kill -9
-- charged never-started jobs an attempt and a rescue.
--
-- Now the claim starts (started_at, attempt + 1) only the rows that take a free slot at once;
-- the rest stay `running` in the table (leased: only their worker may change them) with
-- started_at NULL, which every view shows as `claimed` (job_status and queue_stats: 013). When such a job starts, its worker
-- records the start with the job's outcome, or on its own within START_REPORT_DELAY (see
-- pgqueue/_runtime/completer.py) if the job runs longer than that.

-- Set by a rescue on a row whose start its dead worker had not recorded: it may have started
-- (within the report delay) and killed its process. Its next claim records the start at
-- once, buffered or not, so a job that kills its worker is charged a rescue by the next one
-- and still ends `failed` after `max_rescues`.
ALTER TABLE jobs ADD COLUMN maybe_started boolean NOT NULL DEFAULT false;

-- As in 006; a claimed job has no runtime (it has not started), so only its history can
-- list it, and it reads `claimed` as everywhere else.
CREATE OR REPLACE VIEW stuck_jobs AS
SELECT j.id,
       j.task,
       j.queue,
       CASE WHEN j.state = 'running' AND j.started_at IS NULL THEN 'claimed'
            ELSE j.state END AS state,
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
       CASE WHEN j.state = 'running' AND j.started_at IS NOT NULL
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
