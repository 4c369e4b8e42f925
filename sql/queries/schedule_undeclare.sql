-- A worker stopping no longer declares anything (its row is also marked stopped, which
-- alone makes its declarations count for nothing; this keeps the table small).
DELETE FROM {schema}.cron_declarations WHERE worker_id = %(worker_id)s::uuid
