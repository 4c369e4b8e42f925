-- A job's stored step results, read once per run at its first durable step.
SELECT name, result FROM {schema}.steps WHERE job_id = %(id)s::bigint
