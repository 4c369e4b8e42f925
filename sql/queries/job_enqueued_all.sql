-- Everything waiting, for a helpful assertion message (pgqueue.testing).
SELECT task, args, queue
  FROM {schema}.jobs
 WHERE state IN ('scheduled', 'available', 'retrying')
 ORDER BY id
 LIMIT 20
