-- Delete one batch of finished jobs older than their retention (or than `older_than` when
-- given), oldest first, through the finished_at index. Small batches keep each lock short;
-- SKIP LOCKED keeps the pruner out of anyone's way. Live jobs are never touched.
WITH doomed AS (
    SELECT j.id
      FROM {schema}.jobs AS j
      LEFT JOIN {schema}.retention AS r ON r.state = j.state
     WHERE j.state IN ('completed', 'failed', 'cancelled')
       AND j.finished_at < now() - coalesce(make_interval(secs => %(older_than)s::float8),
                                            r.keep_for, interval '7 days')
       -- Never a job whose result an unfinished dependent still needs (parent_results).
       AND NOT (j.in_workflow AND EXISTS (
               SELECT 1 FROM {schema}.job_edges AS e
                 JOIN {schema}.jobs AS c ON c.id = e.job_id
                WHERE e.depends_on = j.id
                  AND c.state NOT IN ('completed', 'failed', 'cancelled')))
     ORDER BY j.finished_at
     LIMIT %(batch)s::integer
       FOR UPDATE OF j SKIP LOCKED
)
DELETE FROM {schema}.jobs AS j USING doomed WHERE j.id = doomed.id
RETURNING j.id
