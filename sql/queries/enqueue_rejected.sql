-- How many enqueues every client had refused with QueueFull (a sequence: a refusal rolls
-- its own transaction back, and a sequence is the one counter that survives that).
SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {schema}.rejected_enqueues
