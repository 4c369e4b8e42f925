-- 005: one enqueue path. Single and bulk enqueue share their defaults, their first state and
-- their wake-up, each written once here, so back pressure and topics will be written once too.
--
-- Until now bulk enqueue was a raw INSERT ... SELECT in the client's query file with its own
-- default of 3 attempts, its own rule for the first state, no default queue (a NULL queue
-- failed the NOT NULL constraint) and a separate NOTIFY statement sent by the client.
--
-- Every statement here can run again without harm (CREATE OR REPLACE, SET DEFAULT), for
-- teams that apply the printed SQL with their own tool.

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
    v_id    bigint;
    v_queue text := coalesce(p_queue, default_queue());
    v_state text := initial_state(p_run_at);
BEGIN
    LOOP
        -- ON CONFLICT waits for a concurrent inserter of the same key to commit or roll back,
        -- so two racing enqueues can never both create a job.
        INSERT INTO jobs AS j (task, args, queue, priority, run_at, unique_key, max_attempts,
                               timeout, state)
        VALUES (p_task, coalesce(p_args, '{}'), v_queue, coalesce(p_priority, 0),
                coalesce(p_run_at, now()), p_unique_key,
                coalesce(p_max_attempts, default_max_attempts()), p_timeout, v_state)
        ON CONFLICT (unique_key)
            WHERE unique_key IS NOT NULL
              AND state IN ('scheduled', 'available', 'running', 'retrying')
            DO NOTHING
        RETURNING j.id INTO v_id;

        IF v_id IS NOT NULL THEN
            -- Delivered only at commit, and PostgreSQL folds identical notifications of one
            -- transaction into one, so a transaction that enqueues many jobs wakes once.
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
    v_queue text := coalesce(p_queue, default_queue());
    v_state text := initial_state(p_run_at);
BEGIN
    IF jsonb_typeof(p_args) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'enqueue_many takes a JSON array of argument objects, not %',
                        coalesce(jsonb_typeof(p_args), 'NULL')
              USING ERRCODE = 'invalid_parameter_value';
    END IF;

    RETURN QUERY
    INSERT INTO jobs AS j (task, args, queue, priority, run_at, max_attempts, timeout, state)
    SELECT p_task, a.args, v_queue, coalesce(p_priority, 0), coalesce(p_run_at, now()),
           coalesce(p_max_attempts, default_max_attempts()), p_timeout, v_state
      FROM jsonb_array_elements(p_args) WITH ORDINALITY AS a(args, ord)
     ORDER BY a.ord
    RETURNING j.id;

    IF FOUND AND v_state = 'available' THEN
        PERFORM pg_notify(notify_channel(), v_queue);
    END IF;
END
$$;

-- The public entry point: a NULL queue now means the default queue (as it already did when
-- passed explicitly), with the default itself defined above rather than repeated here.
CREATE OR REPLACE FUNCTION enqueue(
    task text,
    args jsonb DEFAULT '{}',
    queue text DEFAULT NULL,
    priority integer DEFAULT 0,
    run_at timestamptz DEFAULT NULL,
    unique_key text DEFAULT NULL,
    max_attempts integer DEFAULT NULL
) RETURNS bigint
    LANGUAGE sql VOLATILE SET search_path FROM CURRENT
AS $$
    SELECT e.id FROM enqueue_job(task, args, queue, priority, run_at, unique_key,
                                 max_attempts, NULL) AS e
$$;
