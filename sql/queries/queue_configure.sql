-- Set a queue's settings (configure_queue in 012_flow_control.sql): keys present in the JSON
-- object are set, JSON null removes one, keys absent stay as they are.
SELECT queue, concurrency, rate, group_concurrency, group_rate, fair, max_depth, paused
  FROM {schema}.configure_queue(%(queue)s::text, %(settings)s::jsonb)
