-- How many failed jobs match these filters (each optional): what a bulk retry would put
-- back in line, counted first so the dashboard and the CLI can say how many and ask.
SELECT count(*)
  FROM {schema}.jobs
 WHERE state = 'failed'
   AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
   AND (%(task)s::text IS NULL OR task = %(task)s::text)
