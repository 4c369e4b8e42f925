-- The queues that have flow-control settings now: a worker claims those it serves through
-- claim_limited (job_claim_limited.sql) and leaves them out of its plain claim. Read about
-- once a second while the worker claims, and after a wake-up: a small table.
SELECT name FROM {schema}.queues WHERE limited ORDER BY name
