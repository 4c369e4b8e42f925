-- One write per worker process per interval, however many jobs it runs. RETURNING tells a
-- worker that was declared dead (and whose row was cleaned up) to register again.
UPDATE {schema}.workers SET heartbeat_at = now() WHERE id = %(id)s::uuid RETURNING id
