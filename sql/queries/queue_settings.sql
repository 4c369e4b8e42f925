-- One queue's settings, or no row when it has none.
SELECT name AS queue, concurrency, {schema}.format_rate(rate_limit, rate_period) AS rate,
       group_concurrency, {schema}.format_rate(group_rate_limit, group_rate_period) AS group_rate,
       fair, max_depth, paused
  FROM {schema}.queues
 WHERE name = %(queue)s::text
