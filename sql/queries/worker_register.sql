INSERT INTO {schema}.workers (id, hostname, pid, queues, concurrency)
VALUES (%(id)s, %(hostname)s, %(pid)s, %(queues)s::text[], %(concurrency)s)
