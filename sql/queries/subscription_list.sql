-- Every subscription (`pgqueue topics`), from the public view.
SELECT pattern, task, queue, priority, max_attempts, created_at, published_last_hour
  FROM {schema}.subscriptions
 ORDER BY pattern, task
