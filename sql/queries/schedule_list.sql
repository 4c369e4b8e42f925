-- Every schedule (`pgqueue schedules`), from the public view.
SELECT name, task, cron, tz, next_run_at, last_slot, last_job_id, last_job_state, paused,
       declared_by_live_workers, catch_up, queue, args
  FROM {schema}.schedules
 ORDER BY name
