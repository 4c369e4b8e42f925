-- Record that this worker declares its schedules (after schedule_upsert, so every row it
-- wrote is visible), for each one whose stored task is the declared one; the others are
-- returned as clashes (name, declared task, stored task), and nothing is declared for them.
WITH input AS (
    SELECT r.name, r.task
      FROM unnest(%(names)s::text[], %(tasks)s::text[]) AS r(name, task)
),
declared AS (
    INSERT INTO {schema}.cron_declarations (schedule, worker_id)
    SELECT i.name, %(worker_id)s::uuid
      FROM input AS i
      JOIN {schema}.cron_schedules AS c ON c.name = i.name AND c.task = i.task
    ON CONFLICT (schedule, worker_id) DO NOTHING
    RETURNING schedule
)
SELECT i.name, i.task, c.task
  FROM input AS i
  JOIN {schema}.cron_schedules AS c ON c.name = i.name
 WHERE c.task <> i.task
 ORDER BY i.name
