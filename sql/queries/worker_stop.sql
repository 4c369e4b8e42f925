UPDATE {schema}.workers SET stopped_at = now(), heartbeat_at = now() WHERE id = %(id)s
