-- Store a finished step's result, fenced by the run's lease: a run whose job was rescued and
-- claimed again stores nothing (and hears so: no row comes back).
INSERT INTO {schema}.steps (job_id, name, result)
SELECT j.id, %(name)s::text, %(result)s::jsonb
  FROM {schema}.jobs AS j
 WHERE j.id = %(id)s::bigint
   AND j.lease = %(lease)s::uuid
ON CONFLICT (job_id, name) DO NOTHING
RETURNING name
