-- The schedules that may fire: not paused, declared by at least one live worker. With the
-- database's clock, which is the only clock slots are computed against.
SELECT c.name, c.cron, c.tz, c.catch_up, c.last_slot, c.next_run_at, now()
  FROM {schema}.cron_schedules AS c
 WHERE NOT c.paused
   AND {schema}.schedule_declarers(c.name) > 0
 ORDER BY c.name
