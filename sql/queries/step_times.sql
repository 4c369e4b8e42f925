-- A job's finished durable steps, in the order they finished (for `pgqueue job ID`).
SELECT name, finished_at FROM {schema}.steps WHERE job_id = %(id)s::bigint ORDER BY finished_at, name
