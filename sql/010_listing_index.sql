-- The dashboard's "failed jobs" page stays one index page deep however many finished
-- jobs the table holds.
--
-- The job listing walks the primary key newest first, which finds a page at once unless the
-- filter is rare: one failed job in a thousand finished ones meant reading 50,000 rows for a
-- page (30 ms at a million rows, and linear in the history). Failed and cancelled jobs are
-- what an operator opens the dashboard for. The index holds only them, so it costs an insert
-- only when a job ends that way (the state change already rules out a HOT update), nothing
-- on the claim or completion path of a job that succeeds.
CREATE INDEX IF NOT EXISTS jobs_failed_idx ON jobs (id) WHERE state IN ('failed', 'cancelled');
