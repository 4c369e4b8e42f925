INSERT INTO {schema}.workers (id, hostname, pid, queues, concurrency, heartbeat_timeout,
                              exclude_queues)
VALUES (%(id)s, %(hostname)s, %(pid)s, %(queues)s::text[], %(concurrency)s,
        %(heartbeat_timeout)s, %(exclude_queues)s::text[])
