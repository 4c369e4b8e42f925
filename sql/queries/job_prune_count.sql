-- How many finished jobs a prune with these settings would delete now (the CLI asks before
-- a large delete). The same predicate as job_prune.sql, without the batch limit.
SELECT count(*)
  FROM {schema}.jobs AS j
  LEFT JOIN {schema}.retention AS r ON r.state = j.state
 WHERE j.state IN ('completed', 'failed', 'cancelled')
   AND j.finished_at < now() - coalesce(make_interval(secs => %(older_than)s::float8),
                                        r.keep_for, interval '7 days')
