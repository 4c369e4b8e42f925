-- The task catalog and the redaction keys, kept in the database so that every client agrees.
--
-- A task's defaults (queue, priority, max_attempts, timeout) were known only to the Python
-- processes that import it: `pgqueue.enqueue('send_welcome', ...)` from SQL, or
-- `app.enqueue('send_welcome')` in a process without the task, put the job on the `default`
-- queue with 3 attempts, whatever the task declared. Workers and apps now write what they
-- register here, and both enqueue functions take a default they were not given from the
-- catalog first, then from the built-in defaults, so SQL and Python enqueue the same job.
CREATE TABLE tasks (
    name          text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$'),
    queue         text CHECK (queue ~ '^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$'),
    priority      integer,
    max_attempts  integer CHECK (max_attempts >= 1),
    timeout       double precision CHECK (timeout > 0),
    registered_by text,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Argument keys whose values every reader (the CLI, `top`, dashboards, workers' logs) shows
-- as ***: the union of what every App was configured with. Stored lower-case.
CREATE TABLE redact_keys (
    key      text PRIMARY KEY CHECK (key <> '' AND key = lower(key)),
    added_at timestamptz NOT NULL DEFAULT now()
);

-- The checks Python makes before a job is written, made again here for SQL clients: the
-- payload limit (1 MiB of JSON text) and a unique_key that is not empty. The limit is tested
-- only for a payload whose stored size is already large (pg_column_size costs nothing, a
-- text rendering does), so typical payloads are never serialized again.
CREATE OR REPLACE FUNCTION payload_ok(p_args jsonb) RETURNS boolean
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    v_bytes integer := pg_catalog.octet_length(p_args::text);
BEGIN
    IF v_bytes > 1048576 THEN
        RAISE EXCEPTION 'task arguments are % bytes encoded; the limit is 1048576', v_bytes
              USING ERRCODE = 'program_limit_exceeded';
    END IF;
    RETURN true;
END
$$;

CREATE OR REPLACE FUNCTION enqueue_job(
    p_task text,
    p_args jsonb,
    p_queue text,
    p_priority integer,
    p_run_at timestamptz,
    p_unique_key text,
    p_max_attempts integer,
    p_timeout double precision
) RETURNS TABLE (id bigint, duplicate boolean)
    LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT
AS $$
DECLARE
    v_id           bigint;
    v_queue        text := p_queue;
    v_priority     integer := p_priority;
    v_max_attempts integer := p_max_attempts;
    v_timeout      double precision := p_timeout;
    v_state        text := initial_state(p_run_at);
    v_task         record;
BEGIN
    IF pg_column_size(p_args) > 262144 THEN
        PERFORM payload_ok(p_args);
    END IF;
    IF p_unique_key = '' THEN
        RAISE EXCEPTION 'unique_key must be a non-empty string'
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_queue IS NULL OR v_priority IS NULL OR v_max_attempts IS NULL OR v_timeout IS NULL THEN
        -- Into a record of its own: SELECT INTO sets its targets to NULL when no row matches.
        SELECT t.queue, t.priority, t.max_attempts, t.timeout INTO v_task
          FROM tasks AS t WHERE t.name = p_task;
        IF FOUND THEN
            v_queue := coalesce(v_queue, v_task.queue);
            v_priority := coalesce(v_priority, v_task.priority);
            v_max_attempts := coalesce(v_max_attempts, v_task.max_attempts);
            v_timeout := coalesce(v_timeout, v_task.timeout);
        END IF;
    END IF;
    v_queue := coalesce(v_queue, default_queue());
    LOOP
        -- ON CONFLICT waits for a concurrent inserter of the same key to commit or roll back,
        -- so two racing enqueues can never both create a job.
        INSERT INTO jobs AS j (task, args, queue, priority, run_at, unique_key, max_attempts,
                               timeout, state)
        VALUES (p_task, coalesce(p_args, '{}'), v_queue, coalesce(v_priority, 0),
                coalesce(p_run_at, now()), p_unique_key,
                coalesce(v_max_attempts, default_max_attempts()), v_timeout, v_state)
        ON CONFLICT (unique_key)
            WHERE unique_key IS NOT NULL
              AND state IN ('scheduled', 'available', 'running', 'retrying')
            DO NOTHING
        RETURNING j.id INTO v_id;

        IF v_id IS NOT NULL THEN
            -- Delivered only at commit; identical notifications of one transaction fold.
            IF v_state = 'available' THEN
                PERFORM pg_notify(notify_channel(), v_queue);
            END IF;
            RETURN QUERY SELECT v_id, false;
            RETURN;
        END IF;

        -- A fresh snapshot per statement (READ COMMITTED) sees the job that won the race.
        SELECT j.id INTO v_id FROM jobs AS j
         WHERE j.unique_key = p_unique_key
           AND j.state IN ('scheduled', 'available', 'running', 'retrying');
        IF v_id IS NOT NULL THEN
            RETURN QUERY SELECT v_id, true;
            RETURN;
        END IF;
        -- The job holding the key finished between the two statements: insert again.
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION enqueue_many(
    p_task text,
    p_args jsonb,
    p_queue text DEFAULT NULL,
    p_priority integer DEFAULT NULL,
    p_run_at timestamptz DEFAULT NULL,
    p_max_attempts integer DEFAULT NULL,
    p_timeout double precision DEFAULT NULL
) RETURNS TABLE (id bigint)
    LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT
AS $$
DECLARE
    v_queue        text := p_queue;
    v_priority     integer := p_priority;
    v_max_attempts integer := p_max_attempts;
    v_timeout      double precision := p_timeout;
    v_state        text := initial_state(p_run_at);
    v_task         record;
BEGIN
    IF jsonb_typeof(p_args) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'enqueue_many takes a JSON array of argument objects, not %',
                        coalesce(jsonb_typeof(p_args), 'NULL')
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_queue IS NULL OR v_priority IS NULL OR v_max_attempts IS NULL OR v_timeout IS NULL THEN
        -- Into a record of its own: SELECT INTO sets its targets to NULL when no row matches.
        SELECT t.queue, t.priority, t.max_attempts, t.timeout INTO v_task
          FROM tasks AS t WHERE t.name = p_task;
        IF FOUND THEN
            v_queue := coalesce(v_queue, v_task.queue);
            v_priority := coalesce(v_priority, v_task.priority);
            v_max_attempts := coalesce(v_max_attempts, v_task.max_attempts);
            v_timeout := coalesce(v_timeout, v_task.timeout);
        END IF;
    END IF;
    v_queue := coalesce(v_queue, default_queue());

    RETURN QUERY
    INSERT INTO jobs AS j (task, args, queue, priority, run_at, max_attempts, timeout, state)
    SELECT p_task, a.args, v_queue, coalesce(v_priority, 0), coalesce(p_run_at, now()),
           coalesce(v_max_attempts, default_max_attempts()), v_timeout, v_state
      FROM jsonb_array_elements(p_args) WITH ORDINALITY AS a(args, ord)
     -- the payload limit per job (CASE fixes the order: the cheap test first)
     WHERE CASE WHEN pg_column_size(a.args) > 262144 THEN payload_ok(a.args) ELSE true END
     ORDER BY a.ord
    RETURNING j.id;

    IF FOUND AND v_state = 'available' THEN
        PERFORM pg_notify(notify_channel(), v_queue);
    END IF;
END
$$;

-- The public entry point: every option not given comes from the task's catalog entry, then
-- from the built-in defaults (priority too: it defaulted to 0 here before).
CREATE OR REPLACE FUNCTION enqueue(
    task text,
    args jsonb DEFAULT '{}',
    queue text DEFAULT NULL,
    priority integer DEFAULT NULL,
    run_at timestamptz DEFAULT NULL,
    unique_key text DEFAULT NULL,
    max_attempts integer DEFAULT NULL
) RETURNS bigint
    LANGUAGE sql VOLATILE SET search_path FROM CURRENT
AS $$
    SELECT e.id FROM enqueue_job(task, args, queue, priority, run_at, unique_key,
                                 max_attempts, NULL) AS e
$$;
