-- 001: jobs, workers, queues; the enqueue function; the status views.
--
-- The migrator runs this file with `search_path` set to the target schema only, so no name
-- here is schema-qualified and the schema name is never spliced into SQL text. Functions pin
-- that path with `SET search_path FROM CURRENT`, so they resolve the same tables whoever calls
-- them (a trigger in another schema, a role with a different search_path).

-- Queues are created implicitly by enqueue; a row here exists only for queues that carry
-- settings (pause now, max_depth and rate limits on the roadmap).
CREATE TABLE queues (
    name        text PRIMARY KEY
                CHECK (name ~ '^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$'),
    paused      boolean NOT NULL DEFAULT false,
    max_depth   integer CHECK (max_depth > 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per worker process (not per job), so liveness costs one write per heartbeat.
CREATE TABLE workers (
    id            uuid PRIMARY KEY,
    hostname      text NOT NULL,
    pid           integer NOT NULL,
    queues        text[],                 -- NULL: every queue
    concurrency   integer NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    stopped_at    timestamptz
);

CREATE TABLE jobs (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task          text NOT NULL CHECK (task ~ '^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$'),
    queue         text NOT NULL DEFAULT 'default'
                  CHECK (queue ~ '^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$'),
    args          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(args) = 'object'),
    state         text NOT NULL DEFAULT 'available'
                  CHECK (state IN ('scheduled', 'available', 'running', 'retrying',
                                   'completed', 'failed', 'cancelled')),
    priority      integer NOT NULL DEFAULT 0,
    run_at        timestamptz NOT NULL DEFAULT now(),
    attempt       integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts  integer NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    rescue_count  integer NOT NULL DEFAULT 0,
    unique_key    text,
    -- Roadmap columns, present now so later features add behaviour, not a table rewrite:
    -- tenant for per-tenant fairness and per-key concurrency, meta for cron slots, topics
    -- and workflow steps.
    tenant        text,
    meta          jsonb NOT NULL DEFAULT '{}',
    timeout       double precision CHECK (timeout > 0),   -- seconds, for the stuck-job monitor
    lease         uuid,                                   -- fencing token of the current claim
    worker_id     uuid,
    result        jsonb,
    errors        jsonb NOT NULL DEFAULT '[]',            -- one object per failed attempt
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz
) WITH (
    -- Every job is updated at least twice; leave room on the page for HOT updates and
    -- vacuum this hot table far more eagerly than the global defaults would.
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_analyze_scale_factor = 0.02
);

-- The claim path. Partial on the claimable states, written with literal values so that the
-- claim query (which repeats the same literals) matches it under generic plans too. Rows
-- leave the index as soon as they are claimed, so it stays as small as the backlog.
CREATE INDEX jobs_claim_idx ON jobs (priority DESC, run_at, id) INCLUDE (queue)
    WHERE state IN ('scheduled', 'available', 'retrying');

-- At most one unfinished job per unique_key; finished jobs release the key.
CREATE UNIQUE INDEX jobs_unique_key_idx ON jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('scheduled', 'available', 'running', 'retrying');

-- Rescue and the stuck-job monitor look up running jobs by worker.
CREATE INDEX jobs_running_idx ON jobs (worker_id) WHERE state = 'running';

-- Pruning and "finished in the last N minutes" statistics.
CREATE INDEX jobs_finished_idx ON jobs (finished_at)
    WHERE state IN ('completed', 'failed', 'cancelled');

-- The NOTIFY channel of this schema. Derived from the schema so that two pgqueue schemas in
-- one database never wake each other's workers; the Python side computes the same name.
CREATE FUNCTION notify_channel() RETURNS text
    LANGUAGE sql STABLE SET search_path FROM CURRENT
    AS $$ SELECT current_schema() || '_jobs' $$;

-- The one enqueue path: the Python library calls it too, so SQL clients, triggers and Python
-- get the same defaults, the same dedupe and the same wake-up.
CREATE FUNCTION enqueue_job(
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
    v_queue text := coalesce(p_queue, 'default');
    v_state text := CASE WHEN p_run_at IS NULL OR p_run_at <= now()
                         THEN 'available' ELSE 'scheduled' END;
BEGIN
    LOOP
        -- ON CONFLICT waits for a concurrent inserter of the same key to commit or roll back,
        -- so two racing enqueues can never both create a job.
        INSERT INTO jobs AS j (task, args, queue, priority, run_at, unique_key, max_attempts,
                               timeout, state)
        VALUES (p_task, coalesce(p_args, '{}'), v_queue, coalesce(p_priority, 0),
                coalesce(p_run_at, now()), p_unique_key, coalesce(p_max_attempts, 3),
                p_timeout, v_state)
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

-- The public, stable SQL entry point (DESIGN.md section 3), usable from triggers.
CREATE FUNCTION enqueue(
    task text,
    args jsonb DEFAULT '{}',
    queue text DEFAULT 'default',
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

-- One row per job. `scheduled` jobs whose time has come read as `available`: they are
-- claimable, and an operator should see them as waiting, not as future work.
CREATE VIEW job_status AS
SELECT j.id,
       j.task,
       j.queue,
       CASE WHEN j.state = 'scheduled' AND j.run_at <= now() THEN 'available'
            ELSE j.state END AS state,
       j.priority,
       j.attempt,
       j.max_attempts,
       j.args,
       j.result,
       CASE WHEN jsonb_array_length(j.errors) > 0
            THEN (j.errors -> -1 ->> 'type') || ': ' || (j.errors -> -1 ->> 'message')
       END AS last_error,
       j.created_at,
       j.run_at,
       j.started_at,
       j.finished_at,
       CASE WHEN w.id IS NOT NULL THEN w.hostname || ':' || w.pid
            ELSE j.worker_id::text END AS worker,
       j.rescue_count,
       j.unique_key
  FROM jobs AS j
  LEFT JOIN workers AS w ON w.id = j.worker_id;

-- One row per queue that has jobs or settings.
CREATE VIEW queue_stats AS
WITH counts AS (
    SELECT queue,
           count(*) FILTER (WHERE state = 'scheduled' AND run_at > now()) AS scheduled,
           count(*) FILTER (WHERE state = 'available'
                               OR (state = 'scheduled' AND run_at <= now())) AS available,
           count(*) FILTER (WHERE state = 'running') AS running,
           count(*) FILTER (WHERE state = 'retrying') AS retrying,
           count(*) FILTER (WHERE state = 'completed') AS completed,
           count(*) FILTER (WHERE state = 'failed') AS failed,
           count(*) FILTER (WHERE state = 'cancelled') AS cancelled,
           min(run_at) FILTER (WHERE state IN ('available', 'scheduled', 'retrying')
                                 AND run_at <= now()) AS oldest_available_at,
           count(*) FILTER (WHERE state = 'failed'
                              AND finished_at > now() - interval '1 hour') AS failed_last_hour,
           count(*) FILTER (WHERE state = 'completed'
                              AND finished_at > now() - interval '1 minute')
               AS completed_last_minute
      FROM jobs
     GROUP BY queue
)
SELECT coalesce(c.queue, q.name) AS queue,
       coalesce(c.scheduled, 0) AS scheduled,
       coalesce(c.available, 0) AS available,
       coalesce(c.running, 0) AS running,
       coalesce(c.retrying, 0) AS retrying,
       coalesce(c.completed, 0) AS completed,
       coalesce(c.failed, 0) AS failed,
       coalesce(c.cancelled, 0) AS cancelled,
       coalesce(extract(epoch FROM now() - c.oldest_available_at), 0)::double precision
           AS lag_seconds,
       coalesce(c.failed_last_hour, 0) AS failed_last_hour,
       coalesce(c.completed_last_minute, 0) AS completed_last_minute,
       coalesce(q.paused, false) AS paused
  FROM counts AS c
  FULL JOIN queues AS q ON q.name = c.queue;
