DELETE FROM {schema}.leaders WHERE name = 'maintenance' AND worker_id = %(worker_id)s::uuid
