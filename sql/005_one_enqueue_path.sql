-- 005: one enqueue path. Single and bulk enqueue share their defaults, their first state and
-- their wake-up, each written once here, so back pressure and topics will be written once too.
--
-- Until now bulk enqueue was a raw INSERT ... SELECT in the client's query file with its own
-- default of 3 attempts, its own rule for the first state, no default queue (a NULL queue
-- failed the NOT NULL constraint) and a separate NOTIFY statement sent by the client.
--
-- Every statement here can run again without harm (CREATE OR REPLACE, SET DEFAULT, CREATE
-- TABLE IF NOT EXISTS), for teams that apply the printed SQL with their own tool.

-- What a NULL option means, defined once: the enqueue functions and the column defaults of
-- `jobs` call these. They name no table, so unlike the other functions they do not pin a
-- search_path: that clause would stop the planner from inlining them, and inlined they fold
-- into constants, costing nothing per job.
CREATE OR REPLACE FUNCTION default_queue() RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT 'default'::text $$;

CREATE OR REPLACE FUNCTION default_max_attempts() RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT 3 $$;

-- The state a new job starts in: due (or given no time) means available, else scheduled. A
-- scheduled job is claimable once its time comes; only an available one wakes workers.
CREATE OR REPLACE FUNCTION initial_state(p_run_at timestamptz) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
        SELECT CASE WHEN p_run_at IS NULL OR p_run_at <= pg_catalog.now()
                    THEN 'available' ELSE 'scheduled' END
    $$;

-- A row inserted directly (tests, operators' scripts) gets the same defaults.
ALTER TABLE jobs
    ALTER COLUMN queue SET DEFAULT default_queue(),
    ALTER COLUMN max_attempts SET DEFAULT default_max_attempts();

-- One job, as before, now on the shared defaults and state rule. Validation is the table's:
-- the name rules (jobs_task_check, jobs_queue_check, see 004), an object for args,
-- max_attempts >= 1, timeout > 0; both paths insert into the same table, so both raise the
-- same errors.

-- The task catalog and the redaction keys, kept in the database so that every client agrees
-- (in this migration with the one enqueue path, whose functions read the catalog).
--
-- A task's defaults (queue, priority, max_attempts, timeout) were known only to the Python
-- processes that import it: `pgqueue.enqueue('send_welcome', ...)` from SQL, or
-- `app.enqueue('send_welcome')` in a process without the task, put the job on the `default`
-- queue with 3 attempts, whatever the task declared. Workers and apps now write what they
-- register here, and both enqueue functions take a default they were not given from the
-- catalog first, then from the built-in defaults, so SQL and Python enqueue the same job.
CREATE TABLE IF NOT EXISTS tasks (
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
CREATE TABLE IF NOT EXISTS redact_keys (
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

-- What a job of this task gets for the options its enqueue left out (NULL): the task's
-- catalog entry, then the queue's built-in default (the rest default at the INSERT). Both
-- enqueue functions read it, so they cannot disagree. Plain SQL, one row always (a LEFT
-- JOIN), so the planner inlines it into the caller's query: no function call per enqueue.
-- Internal: it relies on its caller's search_path.
CREATE OR REPLACE FUNCTION task_defaults(
    p_task text,
    p_queue text,
    p_priority integer,
    p_max_attempts integer,
    p_timeout double precision
) RETURNS TABLE (queue text, priority integer, max_attempts integer, timeout double precision)
    LANGUAGE sql STABLE
AS $$
    SELECT coalesce(p_queue, t.queue, default_queue()), coalesce(p_priority, t.priority),
           coalesce(p_max_attempts, t.max_attempts), coalesce(p_timeout, t.timeout)
      FROM (SELECT) AS one
      LEFT JOIN tasks AS t ON t.name = p_task
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
    v_queue        text;
    v_priority     integer;
    v_max_attempts integer;
    v_timeout      double precision;
    v_state        text := initial_state(p_run_at);
BEGIN
    IF pg_column_size(p_args) > 262144 THEN
        PERFORM payload_ok(p_args);
    END IF;
    IF p_unique_key = '' THEN
        RAISE EXCEPTION 'unique_key must be a non-empty string'
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT d.queue, d.priority, d.max_attempts, d.timeout
      INTO v_queue, v_priority, v_max_attempts, v_timeout
      FROM task_defaults(p_task, p_queue, p_priority, p_max_attempts, p_timeout) AS d;
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

-- Many jobs of one task with one set of options, in one statement: the bulk twin of
-- enqueue_job, with the same defaults, state rule, validation and wake-up (no unique_key:
-- it names one job). The arguments come as one JSON array, one object per job, so a chunk
-- of any size is two parameters and one document to parse. WITH ORDINALITY plus ORDER BY
-- makes the identity values follow the array's order, and the ids come back in that order,
-- so a caller can match them to its inputs.
--
-- The wake-up is sent here, once per call that inserted an available job: delivered at
-- commit, and folded with every identical notification of the transaction, so a caller that
-- inserts several chunks in one transaction wakes the queue's workers once.
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
    v_queue        text;
    v_priority     integer;
    v_max_attempts integer;
    v_timeout      double precision;
    v_state        text := initial_state(p_run_at);
BEGIN
    IF jsonb_typeof(p_args) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'enqueue_many takes a JSON array of argument objects, not %',
                        coalesce(jsonb_typeof(p_args), 'NULL')
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT d.queue, d.priority, d.max_attempts, d.timeout
      INTO v_queue, v_priority, v_max_attempts, v_timeout
      FROM task_defaults(p_task, p_queue, p_priority, p_max_attempts, p_timeout) AS d;

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
