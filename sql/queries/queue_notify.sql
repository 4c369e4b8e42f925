-- Wake workers of these queues once per call (delivered at commit), however many jobs
-- the call inserted.
SELECT pg_notify({schema}.notify_channel(), q) FROM unnest(%(queues)s::text[]) AS q
