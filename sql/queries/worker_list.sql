-- Live workers, with how many jobs each is running now.
SELECT w.id, w.hostname, w.pid, w.queues, w.concurrency, w.started_at, w.heartbeat_at,
       extract(epoch FROM now() - w.heartbeat_at)::double precision AS silent_seconds,
       (w.heartbeat_at > now() - make_interval(secs => w.heartbeat_timeout)) AS alive,
       (SELECT count(*) FROM {schema}.jobs AS j
         WHERE j.worker_id = w.id AND j.state = 'running') AS running,
       EXISTS (SELECT 1 FROM {schema}.leaders AS l WHERE l.worker_id = w.id
                AND l.expires_at > now()) AS leader
  FROM {schema}.workers AS w
 WHERE w.stopped_at IS NULL
   AND w.heartbeat_at > now() - make_interval(secs => 3 * w.heartbeat_timeout)
 ORDER BY w.started_at
