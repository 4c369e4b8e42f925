-- Pause or resume one schedule. Resuming skips the slots that passed while it was paused
-- (last_slot moves to now), so a resume never fires a burst; the leader is woken to
-- re-read its schedules.
WITH changed AS (
    UPDATE {schema}.cron_schedules AS c
       SET paused = %(paused)s::boolean,
           last_slot = CASE WHEN c.paused AND NOT %(paused)s::boolean
                            THEN greatest(c.last_slot, now()) ELSE c.last_slot END,
           updated_at = now()
     WHERE c.name = %(name)s::text
    RETURNING c.name
)
SELECT c.name, pg_notify({schema}.notify_channel(), '#schedules')
  FROM changed AS c
