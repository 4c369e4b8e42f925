-- How many of these jobs are still to run (the demo and tests wait on this).
SELECT count(*) FROM {schema}.jobs
 WHERE id = ANY(%(ids)s::bigint[])
   AND state IN ('scheduled', 'available', 'running', 'retrying', 'waiting')
