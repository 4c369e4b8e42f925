-- 018: a workflow job's counter of unsettled dependencies (`waits_for`) kept exact in every
-- state, and `unique_key` held while a job is `waiting`.
--
-- The counter. `waits_for` counts the edges of a job (job_edges.job_id) that are not settled:
-- a `gather` edge until the job it names ends (completed, failed or cancelled), an `after`
-- edge until the job it names completes. That is what job_depend and job_gather_edges set it
-- to when they add edges; from then on it must follow the other ends of those edges whatever
-- state the waiting job is in, because every way back into line (suspend, job_retry,
-- retry_failed) decides between `waiting` and `available` by reading it.
--
-- 014 broke that in two ways:
--
-- * It subtracted only from a job that was `waiting` or `running`. A parent that spawned
--   children and then slept (`scheduled`), failed an attempt (`retrying`), was rescued, or
--   was cancelled, missed the ends of the children that finished meanwhile; when it gathered
--   later and suspended on a child still running, the count never reached 0 and the parent
--   stayed `waiting` for good. A dependent cancelled by one failed dependency likewise
--   missed its other dependencies' completions, so retrying the failed one revived it with a
--   count that could never reach 0.
-- * It never added back. A child that ended `failed` or `cancelled` and was then put back in
--   line (`pgqueue retry`, App.retry, retry_failed, or the revival of a cancelled dependent)
--   was no longer counted: its parent could be woken while that child ran, find it
--   unfinished, suspend with a count of 0 and so come straight back, over and over, until
--   the child ended (measured: 1,047 runs of the parent in three seconds).
--
-- Here the count moves with each edge's settledness: for every workflow job a statement
-- changed the state of, each edge naming it counts +1 if the edge went from unsettled to
-- settled and -1 if it went back, and each dependent gets one update that applies the sum,
-- whatever its state. The update still moves a `waiting` job whose count reaches 0 to
-- `available` (or `scheduled`); a job in any other state keeps it. A failure that its
-- attempts allow to be retried is `retrying`, which never ended anything: no change there.
-- A plain statement (no workflow job) now stops after one scan of the changed rows, before
-- the join of the old and new rows that it used to pay for; a statement whose workflow jobs
-- only moved between unfinished states (a claim of children, a suspension, a wake-up) looks
-- up no edges.
--
-- The unique key. The partial unique index behind `unique_key` covered `scheduled`,
-- `available`, `running` and `retrying`, so a job `waiting` for a dependency or for its
-- children held no key: a second enqueue with the key made a second job, and the first
-- one's wake-up (`waiting` -> `available`, inside some other job's completion) then broke on
-- the index, failing that completion. The index now covers every unfinished state, and the
-- enqueue function's ON CONFLICT and duplicate lookup name the same states. A cancelled
-- dependent whose key another unfinished job took meanwhile is not revived by a retry of its
-- dependency: it stays cancelled, and the job holding the key is the one that runs.
--
-- An existing database may hold several unfinished jobs with one key already (one of the
-- old states at most, plus `waiting` ones). The migration keeps the key on the one the old
-- index held (the job not `waiting`), or else on the oldest, and clears `unique_key` on the
-- others, which otherwise run as they would have; it says which in a NOTICE. It locks the
-- jobs table against writes (SHARE ROW EXCLUSIVE) for its duration, so no duplicate can
-- appear between that repair and the index build.

LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE;

DO $repair$
DECLARE
    v_released text;
    v_count    integer;
BEGIN
    WITH ranked AS (
        SELECT j.id, j.unique_key,
               row_number() OVER (PARTITION BY j.unique_key
                                  ORDER BY (j.state = 'waiting'), j.id) AS nth
          FROM jobs AS j
         WHERE j.unique_key IS NOT NULL
           AND j.state IN ('scheduled', 'available', 'running', 'retrying', 'waiting')
    ), released AS (
        UPDATE jobs AS j
           SET unique_key = NULL
          FROM ranked AS r
         WHERE j.id = r.id
           AND r.nth > 1
        RETURNING j.id, r.unique_key
    )
    SELECT count(*),
           (SELECT string_agg(format('job %s (%s)', f.id, f.unique_key), ', ' ORDER BY f.id)
              FROM (SELECT r.id, r.unique_key FROM released AS r ORDER BY r.id LIMIT 100) AS f)
      INTO v_count, v_released
      FROM released;
    IF v_count > 0 THEN
        RAISE NOTICE 'pgqueue 018: % unfinished jobs shared a unique_key with another one;'
                     ' their unique_key was cleared: %', v_count,
                     v_released || CASE WHEN v_count > 100 THEN ', ...' ELSE '' END;
    END IF;
END
$repair$;

CREATE UNIQUE INDEX jobs_unique_key_unfinished_idx ON jobs (unique_key)
    WHERE unique_key IS NOT NULL
      AND state IN ('scheduled', 'available', 'running', 'retrying', 'waiting');
DROP INDEX jobs_unique_key_idx;
ALTER INDEX jobs_unique_key_unfinished_idx RENAME TO jobs_unique_key_idx;

-- 015's enqueue_job with the new index's states (an ON CONFLICT names its arbiter index by
-- predicate, so it must imply the index's), templated as 015 is: every name qualified with
-- the schema this migration is applied to.
DO $migration$
BEGIN
    EXECUTE pg_catalog.replace($s$
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
              AND state IN ('scheduled', 'available', 'running', 'retrying', 'waiting')
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
           AND j.state IN ('scheduled', 'available', 'running', 'retrying', 'waiting');
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
    $s$, '{schema}', pg_catalog.quote_ident(pg_catalog.current_schema()));
END
$migration$;

CREATE OR REPLACE FUNCTION job_settle_dependents() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT
AS $$
DECLARE
    -- Workflow jobs whose state change this statement made settles or unsettles the edges
    -- that name them (a claim, a suspension or a wake-up does neither), and by kind: a
    -- `gather` edge settles when its job ends and unsettles when it comes back from an end;
    -- an `after` edge settles when its job completes (and would unsettle if it left
    -- `completed`, which no operation does, but a hand-written UPDATE might).
    changed_ids      bigint[];
    gather_settled   bigint[];
    gather_unsettled bigint[];
    after_settled    bigint[];
    after_unsettled  bigint[];
    -- Those that failed or were cancelled, of them those cancelled, and those put back in
    -- line after a failure or a cancel.
    broken_ids       bigint[];
    cancelled_ids    bigint[];
    revived_ids      bigint[];
    dependents       bigint[];   -- the jobs on the other side of their edges, in id order
    settled          integer[];  -- how much each one's count goes down (negative: up)
    woken_queues     integer;
BEGIN
    -- The common case, a statement that touches no workflow job (a plain drain's claim and
    -- completion): one scan of the new rows, nothing else.
    IF NOT EXISTS (SELECT FROM new_rows AS n WHERE n.in_workflow) THEN
        RETURN NULL;
    END IF;

    SELECT array_agg(n.id) FILTER (
               WHERE (n.state IN ('completed', 'failed', 'cancelled'))
                     <> (o.state IN ('completed', 'failed', 'cancelled'))
                  OR (n.state = 'completed') <> (o.state = 'completed')),
           coalesce(array_agg(n.id) FILTER (
               WHERE n.state IN ('completed', 'failed', 'cancelled')
                 AND o.state NOT IN ('completed', 'failed', 'cancelled')), '{}'),
           coalesce(array_agg(n.id) FILTER (
               WHERE o.state IN ('completed', 'failed', 'cancelled')
                 AND n.state NOT IN ('completed', 'failed', 'cancelled')), '{}'),
           coalesce(array_agg(n.id) FILTER (WHERE n.state = 'completed'), '{}'),
           coalesce(array_agg(n.id) FILTER (WHERE o.state = 'completed'), '{}'),
           array_agg(n.id) FILTER (WHERE n.state IN ('failed', 'cancelled')),
           array_agg(n.id) FILTER (WHERE n.state = 'cancelled'),
           array_agg(n.id) FILTER (WHERE o.state IN ('failed', 'cancelled')
                                     AND n.state NOT IN ('completed', 'failed', 'cancelled'))
      INTO changed_ids, gather_settled, gather_unsettled, after_settled, after_unsettled,
           broken_ids, cancelled_ids, revived_ids
      FROM new_rows AS n
      JOIN old_rows AS o ON o.id = n.id
     WHERE n.in_workflow
       AND o.state IS DISTINCT FROM n.state;

    -- The edges are found with `= ANY (array)` on their indexed column, never by a join to
    -- a set the planner cannot size: a join to unnest() was planned as a scan of all of
    -- job_edges.
    IF changed_ids IS NOT NULL THEN
        SELECT array_agg(d.job_id ORDER BY d.job_id), array_agg(d.n ORDER BY d.job_id)
          INTO dependents, settled
          FROM (SELECT e.job_id,
                       sum(CASE WHEN e.kind = 'gather'
                                THEN (e.depends_on = ANY (gather_settled))::integer
                                     - (e.depends_on = ANY (gather_unsettled))::integer
                                ELSE (e.depends_on = ANY (after_settled))::integer
                                     - (e.depends_on = ANY (after_unsettled))::integer
                            END)::integer AS n
                  FROM job_edges AS e
                 WHERE e.depends_on = ANY (changed_ids)
                 GROUP BY e.job_id) AS d
         WHERE d.n <> 0;

        IF cardinality(dependents) > 1 THEN
            PERFORM 1 FROM jobs WHERE id = ANY (dependents) ORDER BY id FOR UPDATE;
        END IF;

        IF dependents IS NOT NULL THEN
            -- Whatever the dependent's state: a gatherer may be running (it has not reached
            -- gather yet), sleeping, retrying, or over; only a `waiting` one is woken.
            WITH woken AS (
                UPDATE jobs AS c
                   SET waits_for = c.waits_for - d.n,
                       state = CASE WHEN c.state <> 'waiting' OR c.waits_for > d.n THEN c.state
                                    WHEN c.run_at > now() THEN 'scheduled'
                                    ELSE 'available' END
                  FROM unnest(dependents, settled) AS d(id, n)
                 WHERE c.id = d.id
                RETURNING c.queue, c.state
            )
            SELECT count(*) INTO woken_queues
              FROM (SELECT pg_notify(notify_channel(), queue) FROM woken
                     WHERE state = 'available' GROUP BY queue) AS n;
        END IF;
    END IF;

    IF broken_ids IS NOT NULL THEN
        -- Their `after` dependents can never run: cancelled, naming one of them (the lowest
        -- id). That update fires this trigger again, which cancels their own dependents in
        -- turn.
        UPDATE jobs AS c
           SET state = 'cancelled',
               finished_at = now(),
               errors = c.errors || jsonb_build_array(jsonb_build_object(
                   'type', 'DependencyFailed',
                   'message', format('job %s, which this job depends on, ended %s', b.id,
                                     CASE WHEN b.id = ANY (cancelled_ids) THEN 'cancelled'
                                          ELSE 'failed' END),
                   'kind', 'dependency',
                   'dependency', b.id,
                   'attempt', c.attempt,
                   'at', now()))
          FROM (SELECT DISTINCT ON (e.job_id) e.job_id, e.depends_on AS id
                  FROM job_edges AS e
                 WHERE e.depends_on = ANY (broken_ids)
                   AND e.kind = 'after'
                 ORDER BY e.job_id, e.depends_on) AS b
         WHERE c.id = b.job_id
           AND c.state = 'waiting';
    END IF;

    IF cancelled_ids IS NOT NULL THEN
        -- A cancelled job takes the children it spawned with it: those not started are
        -- cancelled, running ones are asked to stop.
        UPDATE jobs AS c
           SET state = CASE WHEN c.state = 'running' THEN c.state ELSE 'cancelled' END,
               finished_at = CASE WHEN c.state = 'running' THEN c.finished_at ELSE now() END,
               cancel_requested = true,
               errors = CASE WHEN c.state = 'running' THEN c.errors
                             ELSE c.errors || jsonb_build_array(jsonb_build_object(
                                 'type', 'ParentCancelled',
                                 'message', format('job %s, which spawned this job, was'
                                                   ' cancelled', k.id),
                                 'kind', 'dependency',
                                 'dependency', k.id,
                                 'attempt', c.attempt,
                                 'at', now())) END
          FROM (SELECT DISTINCT ON (e.depends_on) e.depends_on AS child, e.job_id AS id
                  FROM job_edges AS e
                 WHERE e.job_id = ANY (cancelled_ids)
                   AND e.kind = 'gather'
                 ORDER BY e.depends_on, e.job_id) AS k
         WHERE c.id = k.child
           AND c.state IN ('scheduled', 'available', 'retrying', 'waiting', 'running');
    END IF;

    IF revived_ids IS NOT NULL THEN
        -- Retried after its end: the dependents it cancelled wait for it again (and theirs,
        -- through this trigger again), so retrying a failed step lets the workflow go on.
        -- Not one whose unique_key another unfinished job holds now (it took the key while
        -- this one was cancelled): that one stays cancelled, and of several revived at once
        -- with one key, only the oldest comes back. (An enqueue racing this statement for
        -- the key still meets the unique index, which fails the retry instead.)
        UPDATE jobs AS c
           SET state = 'waiting',
               finished_at = NULL
          FROM (SELECT j.id,
                       row_number() OVER (PARTITION BY j.unique_key ORDER BY j.id) AS nth
                  FROM job_edges AS e
                  JOIN jobs AS j ON j.id = e.job_id
                 WHERE e.depends_on = ANY (revived_ids)
                   AND e.kind = 'after'
                   AND j.state = 'cancelled'
                   AND j.errors -> -1 ->> 'kind' = 'dependency'
                   AND (j.errors -> -1 ->> 'dependency')::bigint = e.depends_on) AS r
         WHERE c.id = r.id
           AND (c.unique_key IS NULL
                OR (r.nth = 1
                    AND NOT EXISTS (
                        SELECT FROM jobs AS h
                         WHERE h.unique_key = c.unique_key
                           AND h.state IN ('scheduled', 'available', 'running', 'retrying',
                                           'waiting'))));
    END IF;
    RETURN NULL;
END
$$;
