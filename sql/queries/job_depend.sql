-- `options(after=[...])`: the jobs just enqueued (`children`, in this transaction) wait for
-- every job in `parents`. Locking the parents (the UPDATE) orders this against their end: a
-- parent that ended before is seen as ended here (the UPDATE re-reads its latest version
-- after any lock wait), one that ends later waits for this transaction and then settles the
-- new edges (see job_settle_dependents, 008 and 014). A child whose parent already
-- failed or was cancelled is cancelled at once, naming it; one whose parents all completed
-- stays as it was. (The edges CTE runs although nothing reads it: data-modifying CTEs always
-- run to completion.)
WITH parents AS (
    UPDATE {schema}.jobs
       SET in_workflow = true
     WHERE id = ANY(%(parents)s::bigint[])
    RETURNING id, state
), edges AS (
    INSERT INTO {schema}.job_edges (job_id, depends_on, kind)
    SELECT c.id, p.id, 'after'
      FROM unnest(%(children)s::bigint[]) AS c(id), parents AS p
    ON CONFLICT DO NOTHING
    RETURNING job_id
), verdict AS (
    SELECT count(*) FILTER (WHERE state <> 'completed') AS unfinished,
           min(id) FILTER (WHERE state IN ('failed', 'cancelled')) AS broken,
           min(state) FILTER (WHERE state IN ('failed', 'cancelled')) AS broken_state
      FROM parents
)
UPDATE {schema}.jobs AS j
   SET in_workflow = true,
       waits_for = v.unfinished,
       state = CASE WHEN v.broken IS NOT NULL THEN 'cancelled'
                    WHEN v.unfinished > 0 THEN 'waiting'
                    ELSE j.state END,
       finished_at = CASE WHEN v.broken IS NOT NULL THEN now() END,
       errors = CASE WHEN v.broken IS NULL THEN j.errors
                     ELSE j.errors || jsonb_build_array(jsonb_build_object(
                         'type', 'DependencyFailed',
                         'message', format('job %%s, which this job depends on, ended %%s',
                                           v.broken, v.broken_state),
                         'kind', 'dependency',
                         'dependency', v.broken,
                         'attempt', 0,
                         'at', now())) END
  FROM verdict AS v
 WHERE j.id = ANY(%(children)s::bigint[])
RETURNING j.id, j.state
