-- `current_job().parent_results`: the results of the jobs this one ran `after`.
SELECT p.id, p.result
  FROM {schema}.job_edges AS e
  JOIN {schema}.jobs AS p ON p.id = e.depends_on
 WHERE e.job_id = %(id)s::bigint
   AND e.kind = 'after'
