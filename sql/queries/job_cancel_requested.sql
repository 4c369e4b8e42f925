-- Running jobs of this worker that an operator asked to cancel.
SELECT id FROM {schema}.jobs
 WHERE worker_id = %(worker_id)s::uuid
   AND state = 'running'
   AND cancel_requested
