-- Which of these jobs exist (a dependency must name a job that does).
SELECT id FROM {schema}.jobs WHERE id = ANY(%(ids)s::bigint[])
