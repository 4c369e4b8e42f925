-- Which of these queue names are in use: a settings row, or waiting jobs (through
-- jobs_claim_queue_idx; finished history is not searched, which on a big table would be a
-- scan). A worker told to serve a name that matches neither says so at start, so a typo is
-- visible.
SELECT q FROM unnest(%(queues)s::text[]) AS q
 WHERE EXISTS (SELECT 1 FROM {schema}.queues WHERE name = q)
    OR EXISTS (SELECT 1 FROM {schema}.jobs
                WHERE queue = q AND state IN ('scheduled', 'available', 'retrying'))
