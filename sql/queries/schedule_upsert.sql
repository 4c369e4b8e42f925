-- Write the schedules a worker declares (`app.periodic`), one statement, arrays in. A new
-- schedule starts at the database's now: its first job is for the first slot after it
-- (nothing is backfilled for a schedule that did not exist). A row changes only when a
-- setting did; a changed expression or time zone moves `last_slot` to now (never back), so
-- the new expression does not fire a burst of "missed" slots. A name held for another task
-- by a live worker is left alone (schedule_declare reports it).
INSERT INTO {schema}.cron_schedules AS c
       (name, task, cron, tz, args, queue, priority, catch_up, last_slot)
SELECT r.name, r.task, r.cron, r.tz, r.args, r.queue, r.priority, r.catch_up, now()
  FROM unnest(%(names)s::text[], %(tasks)s::text[], %(crons)s::text[], %(tzs)s::text[],
              %(args)s::jsonb[], %(queues)s::text[], %(priorities)s::integer[],
              %(catch_ups)s::text[])
       AS r(name, task, cron, tz, args, queue, priority, catch_up)
ON CONFLICT (name) DO UPDATE
   SET task = EXCLUDED.task, cron = EXCLUDED.cron, tz = EXCLUDED.tz, args = EXCLUDED.args,
       queue = EXCLUDED.queue, priority = EXCLUDED.priority, catch_up = EXCLUDED.catch_up,
       last_slot = CASE WHEN (c.cron, c.tz) IS DISTINCT FROM (EXCLUDED.cron, EXCLUDED.tz)
                        THEN greatest(c.last_slot, now()) ELSE c.last_slot END,
       next_run_at = CASE WHEN (c.cron, c.tz) IS DISTINCT FROM (EXCLUDED.cron, EXCLUDED.tz)
                          THEN NULL ELSE c.next_run_at END,
       updated_at = now()
 WHERE (c.task = EXCLUDED.task OR {schema}.schedule_declarers(c.name) = 0)
   AND (c.task, c.cron, c.tz, c.args, c.queue, c.priority, c.catch_up)
       IS DISTINCT FROM (EXCLUDED.task, EXCLUDED.cron, EXCLUDED.tz, EXCLUDED.args,
                         EXCLUDED.queue, EXCLUDED.priority, EXCLUDED.catch_up)
