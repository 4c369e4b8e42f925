-- How many failed jobs a bulk retry of these filters (each optional) would put back in line,
-- counted first so the dashboard and the CLI can say how many and ask.
SELECT count(*) FROM {schema}.failed_to_retry(%(queue)s::text, %(task)s::text)
