-- Become (or stay) the maintenance leader. The upsert takes the row only when it is ours
-- already or its lease has expired, so at most one worker holds it at any time; RETURNING
-- says whether we got it.
INSERT INTO {schema}.leaders AS l (name, worker_id, expires_at)
VALUES ('maintenance', %(worker_id)s::uuid, now() + make_interval(secs => %(ttl)s::float8))
ON CONFLICT (name) DO UPDATE
   SET worker_id = EXCLUDED.worker_id,
       expires_at = EXCLUDED.expires_at,
       elected_at = CASE WHEN l.worker_id = EXCLUDED.worker_id THEN l.elected_at ELSE now() END
 WHERE l.worker_id = EXCLUDED.worker_id OR l.expires_at < now()
RETURNING worker_id
