-- Fire a schedule's due slots: one job per slot later than its last_slot, the slot advance
-- and the inserts in this one statement's transaction (fire_schedule, sql/011).
SELECT slot, job_id
  FROM {schema}.fire_schedule(%(name)s::text, %(slots)s::timestamptz[],
                              %(next_run_at)s::timestamptz)
