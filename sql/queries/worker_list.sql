-- Live workers, with how many jobs each is running now and holds claimed but unstarted.
SELECT w.id, w.hostname, w.pid, w.queues, w.concurrency, w.started_at, w.heartbeat_at,
       extract(epoch FROM now() - w.heartbeat_at)::double precision AS silent_seconds,
       (w.heartbeat_at > now() - make_interval(secs => w.heartbeat_timeout)) AS alive,
       (SELECT count(*) FROM {schema}.jobs AS j
         WHERE j.worker_id = w.id AND j.state = 'running' AND j.started_at IS NOT NULL)
           AS running,
       EXISTS (SELECT 1 FROM {schema}.leaders AS l WHERE l.worker_id = w.id
                AND l.expires_at > now()) AS leader,
       -- Claimed ahead of a free slot, waiting in the worker's buffer (not started).
       (SELECT count(*) FROM {schema}.jobs AS j
         WHERE j.worker_id = w.id AND j.state = 'running' AND j.started_at IS NULL)
           AS claimed
  FROM {schema}.workers AS w
 WHERE w.stopped_at IS NULL
   AND w.heartbeat_at > now() - make_interval(secs => 3 * w.heartbeat_timeout)
 ORDER BY w.started_at
