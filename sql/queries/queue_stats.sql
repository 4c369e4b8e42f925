SELECT queue, scheduled, available, running, retrying, completed, failed, cancelled,
       lag_seconds, failed_last_hour, completed_last_minute, paused,
       claimed, waiting, depth, max_depth, live_workers
  FROM {schema}.queue_stats
 ORDER BY queue
