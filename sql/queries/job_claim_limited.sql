-- Claim from the worker's queues that have flow-control settings (limits, fairness), and
-- record its successes: the `claim_limited` function of 012_flow_control.sql, whose comments
-- say how every limit holds across processes. Same rows as job_claim.sql (claimed true,
-- accepted completions false), plus at most one hint row (claimed NULL) whose `timeout`
-- column is the seconds until a limit permits the next start.
SELECT claimed, id, task, queue, args, attempt, max_attempts, lease, timeout, started, trace,
       scheduled_for, priority, run_at
  FROM {schema}.claim_limited(
           %(queues)s::text[], %(worker_id)s::uuid, %(limit)s::integer,
           %(ids)s::bigint[], %(leases)s::uuid[], %(results)s::jsonb, %(done_channel)s::text,
           %(suspects)s::boolean, %(quarantine)s::integer, %(began)s::double precision[],
           %(start)s::integer)
