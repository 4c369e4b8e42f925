-- 015: single enqueue without a configuration change per call (issue 17).
--
-- The enqueue functions pinned `SET search_path FROM CURRENT`, so every call saved, set and
-- restored a setting (twice for the public `enqueue`, which called `enqueue_job`, and once
-- more for `notify_channel`). Here every name is qualified with the schema this migration is
-- applied to, so the functions resolve the same objects whatever the caller's search_path,
-- and pay nothing to make sure of it. The file still applies with nothing but the
-- search_path set, as a team's own migration tool runs it: the statements are templates,
-- `{schema}` standing for the schema as a quoted identifier and `{schema_name}` as a string
-- literal, filled in from current_schema() by the DO block that runs them.
--
-- `enqueue_job` also does in one statement what took three: the task's catalog defaults and
-- the queue's row (its max_depth, whether it groups) are joined into the INSERT itself,
-- and the depth check runs inside it only for a queue whose row has a max_depth. A job with
-- a unique_key takes the old loop (the key may be held by a job finishing concurrently);
-- one without skips it. Signatures, results and errors are those of 012.
--
-- Measured (benchmarks/README.md, issue 17): a plain SQL function instead of PL/pgSQL was
-- slower by a third, since PostgreSQL 15 plans a non-inlinable SQL function's body again
-- on every call, where PL/pgSQL keeps its plans for the session.

DO $migration$
DECLARE
    v_statement text;
BEGIN
    FOREACH v_statement IN ARRAY ARRAY[
    -- A constant: inlined wherever it is called, and no longer a setting change per NOTIFY.
    $s0$
CREATE OR REPLACE FUNCTION {schema}.notify_channel() RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT {schema_name} || '_jobs' $$
    $s0$,

    -- Back pressure as a predicate, so the INSERT can test it in its WHERE clause: true, or
    -- QueueFull (SQLSTATE PGQ01) as 012's depth_check raises it, whose rules it keeps.
    $s1$
CREATE OR REPLACE FUNCTION {schema}.depth_ok(p_queue text, p_n integer, p_max integer,
                                             p_estimate integer, p_estimate_at timestamptz)
    RETURNS boolean
    LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_depth integer;
BEGIN
    IF p_estimate IS NOT NULL AND p_estimate_at > now() - interval '2 seconds'
       AND p_estimate + p_n <= p_max * 0.8 THEN
        RETURN true;
    END IF;
    SELECT count(*) INTO v_depth
      FROM (SELECT 1 FROM {schema}.jobs AS j
             WHERE j.queue = p_queue AND j.state IN ('scheduled', 'available', 'retrying')
             LIMIT p_max + 1) AS s;
    IF v_depth + p_n > p_max THEN
        PERFORM pg_catalog.nextval('{schema}.rejected_enqueues'::regclass);
        RAISE EXCEPTION 'queue % is full: % waiting jobs, max_depth %', p_queue, v_depth, p_max
              USING ERRCODE = 'PGQ01',
                    DETAIL = json_build_object('queue', p_queue, 'depth', v_depth,
                                               'max_depth', p_max)::text,
                    HINT = 'retry later, or raise the limit: pgqueue queue '
                           || p_queue || ' --max-depth N';
    END IF;
    RETURN true;
END
$$
    $s1$,

    -- 012's procedure, kept for any caller of its own, on the predicate (one rule, one place).
    $s2$
CREATE OR REPLACE FUNCTION {schema}.depth_check(p_queue text, p_n integer, p_max integer,
                                                p_estimate integer, p_estimate_at timestamptz)
    RETURNS void
    LANGUAGE sql VOLATILE
AS $$ SELECT FROM {schema}.depth_ok(p_queue, p_n, p_max, p_estimate, p_estimate_at) $$
    $s2$,

    $s3$
CREATE OR REPLACE FUNCTION {schema}.enqueue_job(
    p_task text,
    p_args jsonb,
    p_queue text,
    p_priority integer,
    p_run_at timestamptz,
    p_unique_key text,
    p_max_attempts integer,
    p_timeout double precision,
    p_group_key text DEFAULT NULL,
    p_expires_at timestamptz DEFAULT NULL
) RETURNS TABLE (id bigint, duplicate boolean)
    LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_id    bigint;
    v_queue text;
    v_state text := {schema}.initial_state(p_run_at);
BEGIN
    IF pg_column_size(p_args) > 262144 THEN
        PERFORM {schema}.payload_ok(p_args);
    END IF;
    IF p_unique_key = '' THEN
        RAISE EXCEPTION 'unique_key must be a non-empty string'
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    LOOP
        -- ON CONFLICT waits for a concurrent inserter of the same key to commit or roll back,
        -- so two racing enqueues can never both create a job. Both lookups are by primary
        -- key; a queue without a row (most) finds none and is never depth-checked.
        INSERT INTO {schema}.jobs AS j (task, args, queue, priority, run_at, unique_key,
                                        max_attempts, timeout, state, group_key, expires_at)
        SELECT p_task, coalesce(p_args, '{}'), d.queue, coalesce(d.priority, 0),
               coalesce(p_run_at, now()), p_unique_key,
               coalesce(d.max_attempts, {schema}.default_max_attempts()), d.timeout, v_state,
               coalesce(p_group_key,
                        CASE WHEN q.fair OR q.group_concurrency IS NOT NULL
                                  OR q.group_rate_limit IS NOT NULL THEN '' END),
               p_expires_at
          FROM (SELECT coalesce(p_queue, t.queue, {schema}.default_queue()) AS queue,
                       coalesce(p_priority, t.priority) AS priority,
                       coalesce(p_max_attempts, t.max_attempts) AS max_attempts,
                       coalesce(p_timeout, t.timeout) AS timeout
                  FROM (SELECT) AS one
                  LEFT JOIN {schema}.tasks AS t ON t.name = p_task) AS d
          LEFT JOIN {schema}.queues AS q ON q.name = d.queue
         WHERE q.max_depth IS NULL
            OR {schema}.depth_ok(d.queue, 1, q.max_depth, q.depth_estimate, q.depth_at)
        ON CONFLICT (unique_key)
            WHERE unique_key IS NOT NULL
              AND state IN ('scheduled', 'available', 'running', 'retrying')
            DO NOTHING
        RETURNING j.id, j.queue INTO v_id, v_queue;

        IF v_id IS NOT NULL THEN
            -- Delivered only at commit; identical notifications of one transaction fold.
            IF v_state = 'available' THEN
                PERFORM pg_notify({schema}.notify_channel(), v_queue);
            END IF;
            id := v_id;
            duplicate := false;
            RETURN NEXT;
            RETURN;
        END IF;

        -- A fresh snapshot per statement (READ COMMITTED) sees the job that won the race.
        SELECT j.id INTO v_id FROM {schema}.jobs AS j
         WHERE j.unique_key = p_unique_key
           AND j.state IN ('scheduled', 'available', 'running', 'retrying');
        IF v_id IS NOT NULL THEN
            id := v_id;
            duplicate := true;
            RETURN NEXT;
            RETURN;
        END IF;
        -- The job holding the key finished between the two statements: insert again.
    END LOOP;
END
$$
    $s3$,

    $s4$
CREATE OR REPLACE FUNCTION {schema}.enqueue_many(
    p_task text,
    p_args jsonb,
    p_queue text DEFAULT NULL,
    p_priority integer DEFAULT NULL,
    p_run_at timestamptz DEFAULT NULL,
    p_max_attempts integer DEFAULT NULL,
    p_timeout double precision DEFAULT NULL,
    p_group_key text DEFAULT NULL,
    p_expires_at timestamptz DEFAULT NULL
) RETURNS TABLE (id bigint)
    LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_queue        text;
    v_priority     integer;
    v_max_attempts integer;
    v_timeout      double precision;
    v_state        text := {schema}.initial_state(p_run_at);
    v_max          integer;
    v_estimate     integer;
    v_estimate_at  timestamptz;
    v_grouped      boolean;
BEGIN
    IF jsonb_typeof(p_args) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'enqueue_many takes a JSON array of argument objects, not %',
                        coalesce(jsonb_typeof(p_args), 'NULL')
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT coalesce(p_queue, t.queue, {schema}.default_queue()), coalesce(p_priority, t.priority),
           coalesce(p_max_attempts, t.max_attempts), coalesce(p_timeout, t.timeout)
      INTO v_queue, v_priority, v_max_attempts, v_timeout
      FROM (SELECT) AS one
      LEFT JOIN {schema}.tasks AS t ON t.name = p_task;
    -- The whole chunk or none of it: checked against depth + its size before any insert.
    SELECT q.max_depth, q.depth_estimate, q.depth_at,
           q.fair OR q.group_concurrency IS NOT NULL OR q.group_rate_limit IS NOT NULL
      INTO v_max, v_estimate, v_estimate_at, v_grouped
      FROM {schema}.queues AS q WHERE q.name = v_queue;
    IF v_max IS NOT NULL THEN
        PERFORM {schema}.depth_ok(v_queue, jsonb_array_length(p_args), v_max, v_estimate,
                                  v_estimate_at);
    END IF;

    RETURN QUERY
    INSERT INTO {schema}.jobs AS j (task, args, queue, priority, run_at, max_attempts, timeout,
                                    state, group_key, expires_at)
    SELECT p_task, a.args, v_queue, coalesce(v_priority, 0), coalesce(p_run_at, now()),
           coalesce(v_max_attempts, {schema}.default_max_attempts()), v_timeout, v_state,
           coalesce(p_group_key, CASE WHEN v_grouped THEN '' END), p_expires_at
      FROM jsonb_array_elements(p_args) WITH ORDINALITY AS a(args, ord)
     -- the payload limit per job (CASE fixes the order: the cheap test first)
     WHERE CASE WHEN pg_column_size(a.args) > 262144 THEN {schema}.payload_ok(a.args)
                ELSE true END
     ORDER BY a.ord
    RETURNING j.id;

    IF FOUND AND v_state = 'available' THEN
        PERFORM pg_notify({schema}.notify_channel(), v_queue);
    END IF;
END
$$
    $s4$,

    -- The public entry point: no setting of its own either, so a call costs one function call
    -- more than `enqueue_job`.
    $s5$
CREATE OR REPLACE FUNCTION {schema}.enqueue(
    task text,
    args jsonb DEFAULT '{}',
    queue text DEFAULT NULL,
    priority integer DEFAULT NULL,
    run_at timestamptz DEFAULT NULL,
    unique_key text DEFAULT NULL,
    max_attempts integer DEFAULT NULL,
    group_key text DEFAULT NULL,
    expires_at timestamptz DEFAULT NULL
) RETURNS bigint
    LANGUAGE sql VOLATILE
AS $$
    SELECT e.id FROM {schema}.enqueue_job(task, args, queue, priority, run_at, unique_key,
                                          max_attempts, NULL, group_key, expires_at) AS e
$$
    $s5$
    ] LOOP
        EXECUTE pg_catalog.replace(
            pg_catalog.replace(v_statement, '{schema_name}',
                               pg_catalog.quote_literal(pg_catalog.current_schema())),
            '{schema}', pg_catalog.quote_ident(pg_catalog.current_schema()));
    END LOOP;
END
$migration$;
