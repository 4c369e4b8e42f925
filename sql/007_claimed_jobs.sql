-- Claimed is not started. A worker claims a few jobs ahead of its free slots (its prefetch
-- buffer, so the next claim's round trip overlaps running jobs); until now every claimed row
-- read `running`, with started_at and the attempt set at claim time. A -c 1 worker then showed
-- two running jobs, a 3 s task that waited 3 s in the buffer recorded 6 s, and a kill -9
-- charged never-started jobs an attempt and a rescue.
--
-- Now the claim starts (started_at, attempt + 1) only the rows that take a free slot at once;
-- the rest stay `running` in the table (leased: only their worker may change them) with
-- started_at NULL, which every view shows as `claimed`. When such a job starts, its worker
-- records the start with the job's outcome, or on its own within START_REPORT_DELAY (see
-- pgqueue/_runtime/completer.py) if the job runs longer than that.

-- Set by a rescue on a row whose start its dead worker had not recorded: it may have started
-- (within the report delay) and killed its process. Its next claim records the start at
-- once, buffered or not, so a job that kills its worker is charged a rescue by the next one
-- and still ends `failed` after `max_rescues`.
ALTER TABLE jobs ADD COLUMN maybe_started boolean NOT NULL DEFAULT false;

CREATE OR REPLACE VIEW job_status AS
SELECT j.id,
       j.task,
       j.queue,
       CASE WHEN j.state = 'scheduled' AND j.run_at <= now() THEN 'available'
            WHEN j.state = 'running' AND j.started_at IS NULL THEN 'claimed'
            ELSE j.state END AS state,
       j.priority,
       j.attempt,
       j.max_attempts,
       j.args,
       j.result,
       CASE WHEN jsonb_array_length(j.errors) > 0
            THEN (j.errors -> -1 ->> 'type') || ': ' || (j.errors -> -1 ->> 'message')
       END AS last_error,
       j.created_at,
       j.run_at,
       j.started_at,
       j.finished_at,
       CASE WHEN w.id IS NOT NULL THEN w.hostname || ':' || w.pid
            ELSE j.worker_id::text END AS worker,
       j.rescue_count,
       j.unique_key
  FROM jobs AS j
  LEFT JOIN workers AS w ON w.id = j.worker_id;

-- As in 003, with `running` counting started jobs only and `claimed` (at the end: a view
-- keeps its columns' order) the ones waiting in a worker's buffer.
CREATE OR REPLACE VIEW queue_stats AS
WITH live AS (
    SELECT queue,
           count(*) FILTER (WHERE state = 'scheduled' AND run_at > now()) AS scheduled,
           count(*) FILTER (WHERE state = 'available'
                               OR (state = 'scheduled' AND run_at <= now())) AS available,
           count(*) FILTER (WHERE state = 'running' AND started_at IS NOT NULL) AS running,
           count(*) FILTER (WHERE state = 'running' AND started_at IS NULL) AS claimed,
           count(*) FILTER (WHERE state = 'retrying') AS retrying,
           min(run_at) FILTER (WHERE state IN ('available', 'scheduled', 'retrying')
                                 AND run_at <= now()) AS oldest_available_at
      FROM (SELECT queue, state, run_at, NULL::timestamptz AS started_at FROM jobs
             WHERE state IN ('scheduled', 'available', 'retrying')
            UNION ALL
            SELECT queue, state, run_at, started_at FROM jobs
             WHERE state = 'running') AS live_jobs
     GROUP BY queue
), finished AS (
    SELECT queue,
           count(*) FILTER (WHERE state = 'completed') AS completed,
           count(*) FILTER (WHERE state = 'failed') AS failed,
           count(*) FILTER (WHERE state = 'cancelled') AS cancelled,
           count(*) FILTER (WHERE state = 'failed'
                              AND finished_at > now() - interval '1 hour') AS failed_last_hour,
           count(*) FILTER (WHERE state = 'completed'
                              AND finished_at > now() - interval '1 minute')
               AS completed_last_minute
      FROM jobs
     WHERE state IN ('completed', 'failed', 'cancelled')
       AND finished_at > now() - interval '1 hour'
     GROUP BY queue
), names AS (
    SELECT queue FROM live
    UNION SELECT queue FROM finished
    UNION SELECT name FROM queues
)
SELECT n.queue,
       coalesce(l.scheduled, 0) AS scheduled,
       coalesce(l.available, 0) AS available,
       coalesce(l.running, 0) AS running,
       coalesce(l.retrying, 0) AS retrying,
       coalesce(f.completed, 0) AS completed,
       coalesce(f.failed, 0) AS failed,
       coalesce(f.cancelled, 0) AS cancelled,
       coalesce(extract(epoch FROM now() - l.oldest_available_at), 0)::double precision
           AS lag_seconds,
       coalesce(f.failed_last_hour, 0) AS failed_last_hour,
       coalesce(f.completed_last_minute, 0) AS completed_last_minute,
       coalesce(q.paused, false) AS paused,
       coalesce(l.claimed, 0) AS claimed
  FROM names AS n
  LEFT JOIN live AS l ON l.queue = n.queue
  LEFT JOIN finished AS f ON f.queue = n.queue
  LEFT JOIN queues AS q ON q.name = n.queue;

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
