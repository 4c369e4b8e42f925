-- Completed and failed jobs per bucket over a recent window, for the dashboard's sparkline.
SELECT floor(extract(epoch FROM now() - finished_at) / %(bucket)s::float8)::int AS ago,
       count(*) FILTER (WHERE state = 'completed') AS completed,
       count(*) FILTER (WHERE state = 'failed') AS failed
  FROM {schema}.jobs
 WHERE state IN ('completed', 'failed', 'cancelled')
   AND finished_at > now() - make_interval(secs => %(bucket)s::float8 * %(buckets)s::int)
 GROUP BY 1
