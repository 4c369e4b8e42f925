-- The queues that have flow-control settings now: a worker claims those it serves through
-- claim_limited (job_claim_limited.sql) and leaves them out of its plain claim. `counted`:
-- a concurrency or rate limit applies (the worker then claims only for free slots, without
-- prefetch: a claimed job is a started one); a queue that is only `fair` may be prefetched.
-- Read about once a second while the worker claims, and after a wake-up: a small table.
SELECT name,
       concurrency IS NOT NULL OR rate_limit IS NOT NULL OR group_concurrency IS NOT NULL
           OR group_rate_limit IS NOT NULL AS counted
  FROM {schema}.queues
 WHERE limited
 ORDER BY name
