-- The trace context of whoever enqueued a job (OpenTelemetry, W3C `traceparent`), kept
-- with the job so that the worker's span for its execution can link back to the request.
--
-- Carried in a transaction-local setting instead of a new enqueue argument: the column's
-- default reads `pgqueue.trace_context`, so every enqueue path (enqueue_job, enqueue_many,
-- the public `enqueue`, an INSERT by hand) records it without a change to any function's
-- signature or body. The Python client sets it, in the same statement as its enqueue, only
-- when a span is active (sql/queries/job_enqueue_traced.sql); any other client may too:
--   SELECT set_config('pgqueue.trace_context', '{"traceparent": "00-...-...-01"}', true);
--   SELECT pgqueue.enqueue('send_welcome', '{"user_id": 42}');
-- Unset (the default), the column is NULL and costs a null bit per row.

-- Inlined into the INSERT's default (plain SQL, no search_path clause: it names no table).
CREATE OR REPLACE FUNCTION trace_context() RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(pg_catalog.current_setting('pgqueue.trace_context', true), '')::jsonb $$;

-- Two steps, so existing rows keep NULL and the table is not rewritten.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS trace jsonb;
ALTER TABLE jobs ALTER COLUMN trace SET DEFAULT trace_context();
