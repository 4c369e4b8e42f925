-- Where the jobs a parent gathers stand: their state, result and last error, by id.
SELECT id, state, result, errors -> -1 AS last_error
  FROM {schema}.jobs
 WHERE id = ANY(%(ids)s::bigint[])
