-- After a claim whose reply was lost (the connection broke after COMMIT), rows may be
-- `running` under this worker that it never heard of. Give them back, attempt unspent.
UPDATE {schema}.jobs
   SET state = 'available',
       attempt = greatest(attempt - (started_at IS NOT NULL)::integer, 0),
       lease = NULL,
       worker_id = NULL,
       started_at = NULL
 WHERE worker_id = %(worker_id)s::uuid
   AND state = 'running'
   AND id <> ALL(%(known)s::bigint[])
RETURNING id
