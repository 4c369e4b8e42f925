-- Give claimed jobs back without consuming an attempt: used at shutdown for jobs that were
-- claimed but never started, or whose run was cancelled by the stop itself.
WITH released AS (
    UPDATE {schema}.jobs AS j
       SET state = 'available',
           attempt = greatest(j.attempt - (j.started_at IS NOT NULL)::integer, 0),
           lease = NULL,
           worker_id = NULL,
           started_at = NULL
      FROM unnest(%(ids)s::bigint[], %(leases)s::uuid[]) AS c(id, lease)
     WHERE j.id = c.id
       AND j.lease = c.lease
       AND j.state = 'running'
    RETURNING j.id, j.queue
)
SELECT id, queue FROM released
