-- A job's place in its workflow, for `pgqueue job ID`: the jobs it depends on (`after`) or
-- spawned (`gather`), and the jobs that depend on it or spawned it, with their states.
SELECT 'depends_on' AS relation, e.kind, p.id, p.task,
       CASE WHEN p.state = 'running' AND p.started_at IS NULL THEN 'claimed'
            ELSE p.state END AS state
  FROM {schema}.job_edges AS e
  JOIN {schema}.jobs AS p ON p.id = e.depends_on
 WHERE e.job_id = %(id)s::bigint
UNION ALL
SELECT 'dependent', e.kind, c.id, c.task,
       CASE WHEN c.state = 'running' AND c.started_at IS NULL THEN 'claimed'
            ELSE c.state END
  FROM {schema}.job_edges AS e
  JOIN {schema}.jobs AS c ON c.id = e.job_id
 WHERE e.depends_on = %(id)s::bigint
 ORDER BY 1, 3
