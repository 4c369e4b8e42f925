-- Write the tasks a process registers (and the redaction keys it was configured with) into
-- the catalog: one statement, arrays in, a row changed only when a default did, so a fleet
-- of workers starting at once does not rewrite the same rows.
WITH registered AS (
    INSERT INTO {schema}.tasks AS t (name, queue, priority, max_attempts, timeout, registered_by)
    SELECT r.name, r.queue, r.priority, r.max_attempts, r.timeout, %(registered_by)s::text
      FROM unnest(%(names)s::text[], %(queues)s::text[], %(priorities)s::integer[],
                  %(max_attempts)s::integer[], %(timeouts)s::double precision[])
           AS r(name, queue, priority, max_attempts, timeout)
    ON CONFLICT (name) DO UPDATE
       SET queue = EXCLUDED.queue, priority = EXCLUDED.priority,
           max_attempts = EXCLUDED.max_attempts, timeout = EXCLUDED.timeout,
           registered_by = EXCLUDED.registered_by, updated_at = now()
     WHERE (t.queue, t.priority, t.max_attempts, t.timeout)
           IS DISTINCT FROM (EXCLUDED.queue, EXCLUDED.priority, EXCLUDED.max_attempts,
                             EXCLUDED.timeout)
    RETURNING 1
),
keys AS (
    INSERT INTO {schema}.redact_keys (key)
    SELECT DISTINCT k FROM unnest(%(redact_keys)s::text[]) AS k
    ON CONFLICT (key) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM registered), (SELECT count(*) FROM keys)
