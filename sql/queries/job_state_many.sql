-- States of the jobs a waiter cares about; job_status folds due `scheduled` into `available`.
SELECT id, state FROM {schema}.jobs WHERE id = ANY(%(ids)s::bigint[])
