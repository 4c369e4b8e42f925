UPDATE {schema}.workers SET heartbeat_at = now() WHERE id = %(id)s
