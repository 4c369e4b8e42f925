-- `ctx.spawn` / `ctx.map`: the children just enqueued (in this transaction) are gathered by
-- the running parent: edges of kind `gather`, the parent's counter raised by their number,
-- and the spawn recorded as a step holding their ids, so a re-run of the parent finds its
-- children instead of spawning them again. Fenced by the parent's lease: no row back means
-- the run lost its job, and the caller rolls the whole spawn back.
WITH parent AS (
    UPDATE {schema}.jobs AS j
       SET waits_for = j.waits_for + cardinality(%(children)s::bigint[]),
           in_workflow = true
     WHERE j.id = %(id)s::bigint
       AND j.lease = %(lease)s::uuid
    RETURNING j.id
), edges AS (
    INSERT INTO {schema}.job_edges (job_id, depends_on, kind)
    SELECT p.id, c.id, 'gather'
      FROM parent AS p, unnest(%(children)s::bigint[]) AS c(id)
    RETURNING depends_on
), children AS (
    UPDATE {schema}.jobs AS c
       SET in_workflow = true
      FROM edges AS e
     WHERE c.id = e.depends_on
    RETURNING c.id
)
INSERT INTO {schema}.steps (job_id, name, result)
SELECT p.id, %(name)s::text, to_jsonb(%(children)s::bigint[])
  FROM parent AS p
 WHERE (SELECT count(*) FROM children) = cardinality(%(children)s::bigint[])
RETURNING name
