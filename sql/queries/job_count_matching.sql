-- How many unfinished jobs match these filters (each optional): what a bulk cancel would
-- touch, counted first so the CLI can say how many and ask.
SELECT count(*)
  FROM {schema}.jobs
 WHERE state IN ('scheduled', 'available', 'retrying', 'running', 'waiting')
   AND (%(state)s::text IS NULL OR state = %(state)s::text)
   AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
   AND (%(task)s::text IS NULL OR task = %(task)s::text)
