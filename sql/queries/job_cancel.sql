-- Only a job that has not started can be cancelled here; running jobs are left alone.
UPDATE {schema}.jobs
   SET state = 'cancelled', finished_at = now()
 WHERE id = %(id)s
   AND state IN ('scheduled', 'available', 'retrying')
RETURNING id
