-- The two views that 007 to 012 each extend, defined once, in their final form. (Each
-- feature's migration adds the columns and states; a view keeps its columns in order and
-- only gains new ones at the end, so one definition after all of them is simpler than
-- one per migration.)
--
-- job_status: one row per job. A `scheduled` job whose time has come reads `available`, and
-- a `running` job whose start is not recorded (claimed ahead into a worker's buffer, 007)
-- reads `claimed`. After 001's columns come where a job came from (topic; schedule and
-- slot, 011), then its group and expiry (012); an empty group_key (a fair or grouped queue's
-- ungrouped jobs, 012) reads NULL.
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
       j.unique_key,
       j.topic,
       j.schedule,
       j.scheduled_for,
       nullif(j.group_key, '') AS group_key,
       j.expires_at
  FROM jobs AS j
  LEFT JOIN workers AS w ON w.id = j.worker_id;

-- queue_stats: one row per queue, cheap however many finished jobs the table holds (see 003).
-- `running` counts started jobs only and `claimed` the ones waiting in a worker's buffer
-- (007); `waiting` counts workflow jobs waiting for what they depend on (008); `depth` the
-- jobs waiting to start (scheduled, available, retrying: what max_depth limits), then
-- `max_depth` and `live_workers`, the live worker processes that serve the queue (012).
CREATE OR REPLACE VIEW queue_stats AS
WITH live AS (
    SELECT queue,
           count(*) FILTER (WHERE state = 'scheduled' AND run_at > now()) AS scheduled,
           count(*) FILTER (WHERE state = 'available'
                               OR (state = 'scheduled' AND run_at <= now())) AS available,
           count(*) FILTER (WHERE state = 'running' AND started_at IS NOT NULL) AS running,
           count(*) FILTER (WHERE state = 'running' AND started_at IS NULL) AS claimed,
           count(*) FILTER (WHERE state = 'retrying') AS retrying,
           count(*) FILTER (WHERE state = 'waiting') AS waiting,
           min(run_at) FILTER (WHERE state IN ('available', 'scheduled', 'retrying')
                                 AND run_at <= now()) AS oldest_available_at
      FROM (SELECT queue, state, run_at, NULL::timestamptz AS started_at FROM jobs
             WHERE state IN ('scheduled', 'available', 'retrying')
            UNION ALL
            SELECT queue, state, run_at, NULL FROM jobs
             WHERE state = 'waiting'
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
), alive AS (
    SELECT w.queues, w.exclude_queues FROM workers AS w
     WHERE w.stopped_at IS NULL
       AND w.heartbeat_at > now() - make_interval(secs => w.heartbeat_timeout)
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
       coalesce(l.claimed, 0) AS claimed,
       coalesce(l.waiting, 0) AS waiting,
       coalesce(l.scheduled + l.available + l.retrying, 0) AS depth,
       q.max_depth,
       (SELECT count(*) FROM alive AS a
         WHERE (a.queues IS NULL OR n.queue = ANY (a.queues))
           AND (a.exclude_queues IS NULL OR n.queue <> ALL (a.exclude_queues)))
           AS live_workers
  FROM names AS n
  LEFT JOIN live AS l ON l.queue = n.queue
  LEFT JOIN finished AS f ON f.queue = n.queue
  LEFT JOIN queues AS q ON q.name = n.queue;
