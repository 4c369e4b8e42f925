-- Publish a chunk of messages (a JSON array of argument objects) to a topic: one job per
-- matching subscription and message, through publish_jobs (sql/011), in the caller's
-- transaction.
SELECT id, task FROM {schema}.publish_jobs(%(topic)s::text, %(args)s::jsonb)
