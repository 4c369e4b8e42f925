-- 003: what an operator needs: pausing queues, the stuck-job monitor, cheap statistics on a
-- table full of finished jobs, cancelling running jobs, and retention settings.

-- A worker records how long it may stay silent, so "is its worker alive?" needs no guess.
ALTER TABLE workers ADD COLUMN heartbeat_timeout double precision NOT NULL DEFAULT 30;

-- A running job cannot be stopped from outside; the flag asks its worker to cancel it.
ALTER TABLE jobs ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false;

-- Jobs worth an operator's attention while still live: rescued, or retried several times.
CREATE INDEX jobs_troubled_idx ON jobs (id)
    WHERE state IN ('scheduled', 'available', 'running', 'retrying')
      AND (rescue_count > 0 OR attempt >= 3);

-- Claims filtered by queue read only their queues' rows: without the queue as leading key,
-- a claim for a small queue would walk past a large backlog of every other queue.
CREATE INDEX jobs_claim_queue_idx ON jobs (queue, priority DESC, run_at, id)
    WHERE state IN ('scheduled', 'available', 'retrying');

-- The idle worker's probe for rescued (suspect) jobs finds nothing in an empty index
-- instead of scanning the backlog.
CREATE INDEX jobs_suspect_idx ON jobs (priority DESC, run_at, id)
    WHERE rescue_count > 0 AND state IN ('scheduled', 'available', 'retrying');

-- How long finished jobs are kept, per state; the elected worker prunes older ones.
CREATE TABLE retention (
    state       text PRIMARY KEY CHECK (state IN ('completed', 'failed', 'cancelled')),
    keep_for    interval NOT NULL CHECK (keep_for >= interval '0')
);
INSERT INTO retention (state, keep_for) VALUES
    ('completed', interval '1 day'),
    ('failed', interval '14 days'),
    ('cancelled', interval '7 days');

-- Statistics per queue, cheap however many finished jobs the table holds: live counts come
-- from the partial indexes of the claim path and of running jobs (one branch each, so each
-- matches its index), and finished counts (completed, failed, cancelled)
-- cover the last hour only, read through the finished_at index, so the cost follows recent
-- throughput rather than the size of the history.
CREATE OR REPLACE VIEW queue_stats AS
WITH live AS (
    SELECT queue,
           count(*) FILTER (WHERE state = 'scheduled' AND run_at > now()) AS scheduled,
           count(*) FILTER (WHERE state = 'available'
                               OR (state = 'scheduled' AND run_at <= now())) AS available,
           count(*) FILTER (WHERE state = 'running') AS running,
           count(*) FILTER (WHERE state = 'retrying') AS retrying,
           min(run_at) FILTER (WHERE state IN ('available', 'scheduled', 'retrying')
                                 AND run_at <= now()) AS oldest_available_at
      FROM (SELECT queue, state, run_at FROM jobs
             WHERE state IN ('scheduled', 'available', 'retrying')
            UNION ALL
            SELECT queue, state, run_at FROM jobs
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
       coalesce(q.paused, false) AS paused
  FROM names AS n
  LEFT JOIN live AS l ON l.queue = n.queue
  LEFT JOIN finished AS f ON f.queue = n.queue
  LEFT JOIN queues AS q ON q.name = n.queue;

-- The task monitor: running jobs past their expected time (bucketed), with their worker and
-- whether it is alive; and live jobs that were rescued or retried several times.
CREATE VIEW stuck_jobs AS
SELECT j.id,
       j.task,
       j.queue,
       j.state,
       CASE
           WHEN j.state <> 'running' AND j.rescue_count > 0
               THEN 'rescued ' || j.rescue_count || 'x'
           WHEN j.state <> 'running' THEN 'retried ' || (j.attempt - 1) || 'x'
           WHEN now() - j.started_at > interval '45 minutes' THEN 'over 45 min'
           WHEN now() - j.started_at > interval '10 minutes' THEN 'over 10 min'
           WHEN now() - j.started_at > interval '5 minutes' THEN 'over 5 min'
           ELSE 'over timeout'
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
