SELECT j.id, j.task, j.queue, s.state, j.priority, j.attempt, j.max_attempts, j.args,
       j.result, j.errors, j.unique_key, j.rescue_count, j.created_at, j.run_at,
       j.started_at, j.finished_at, s.worker, j.trace, j.topic, j.schedule, j.scheduled_for,
       s.group_key, j.expires_at
  FROM {schema}.jobs AS j
  JOIN {schema}.job_status AS s ON s.id = j.id
 WHERE j.id = %(id)s
