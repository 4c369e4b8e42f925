-- Topics (publish once, fan out to every subscription) and schedules (cron with
-- exactly-once slots). DESIGN.md sections 9 and 10.
--
-- Both make their jobs through the one enqueue path of 005 (`enqueue_many` for a publish,
-- `enqueue_job` for a schedule slot), unchanged: whatever that path enforces (defaults from
-- the catalog, validation, the wake-up, and back pressure once it exists) applies to
-- published and scheduled jobs without a second copy.
--
-- What a job came from is recorded in three new columns. A publish's topic costs no second
-- write: the column's default reads a transaction-local setting that `publish_jobs` sets
-- around its calls to `enqueue_many` and clears right after, and an INSERT that names no
-- value for a column takes its default, so every job a publish makes carries its topic from
-- its first write, and any other enqueue finds the setting unset and stores NULL. Measured
-- (benchmarks/README.md, "Topics"): the default costs about 0.05 us per inserted job;
-- setting the column with an UPDATE after the insert instead made a publish cost three
-- times a plain bulk enqueue per job. The setting is internal: pgqueue sets and clears it
-- only inside `publish_jobs`.
--
-- A schedule slot makes one job per slot, so `fire_schedule` simply updates that row after
-- the insert (same transaction, by primary key), and enqueues pay nothing for it.
ALTER TABLE jobs
    ADD COLUMN IF NOT EXISTS topic text
        DEFAULT nullif(current_setting('pgqueue.topic', true), ''),
    ADD COLUMN IF NOT EXISTS schedule text,
    ADD COLUMN IF NOT EXISTS scheduled_for timestamptz;

-- "Jobs published in the last hour" per subscription (the `subscriptions` view) reads only
-- published jobs. Partial: a job that no publish made is not in it.
CREATE INDEX IF NOT EXISTS jobs_topic_idx ON jobs (task, created_at) WHERE topic IS NOT NULL;

-- --- topics ---------------------------------------------------------------------------------

-- A topic: dot-separated segments, each of letters, digits and `_ : -`, 128 characters at
-- most in all (the queue-name characters, without empty segments). A pattern may also use
-- `*` (exactly one segment) and `#` (zero or more segments) as whole segments.
CREATE OR REPLACE FUNCTION topic_ok(p_topic text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT p_topic ~ '^[A-Za-z0-9_:-]+(\.[A-Za-z0-9_:-]+)*$'
                 AND char_length(p_topic) <= 128 $$;

CREATE OR REPLACE FUNCTION topic_pattern_ok(p_pattern text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT p_pattern ~ '^([A-Za-z0-9_:-]+|\*|#)(\.([A-Za-z0-9_:-]+|\*|#))*$'
                 AND char_length(p_pattern) <= 128 $$;

-- The regular expression a wildcard pattern stands for (NULL for a pattern without
-- wildcards: it matches by equality, through the primary key). Literal segments need no
-- escaping: their characters are never special outside a bracket expression. A `#` absorbs
-- the dot on one side of it, so `a.#` matches `a` and `a.b.c`, `#.a` matches `a`, and
-- `a.#.b` matches `a.b`.
CREATE OR REPLACE FUNCTION topic_regex(p_pattern text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    v_seg   text;
    v_re    text := '^';
    v_any   boolean := false;   -- a segment was written before this one
    v_segs  text[] := string_to_array(p_pattern, '.');
    v_i     integer;
BEGIN
    IF p_pattern !~ '(^|\.)(\*|#)(\.|$)' THEN
        RETURN NULL;
    END IF;
    FOR v_i IN 1 .. cardinality(v_segs) LOOP
        v_seg := v_segs[v_i];
        IF v_seg = '#' THEN
            IF v_i > 1 AND v_segs[v_i - 1] = '#' THEN
                CONTINUE;  -- `#.#` is `#`
            ELSIF v_any THEN
                v_re := v_re || '(\.[^.]+)*';
            ELSIF v_i = cardinality(v_segs) THEN
                v_re := v_re || '.*';
            ELSE
                v_re := v_re || '([^.]+\.)*';
            END IF;
        ELSE
            IF v_any THEN
                v_re := v_re || '\.';
            END IF;
            v_re := v_re || CASE WHEN v_seg = '*' THEN '[^.]+' ELSE v_seg END;
            v_any := true;
        END IF;
    END LOOP;
    RETURN v_re || '$';
END
$$;

-- One row per (pattern, task): a publish on a matching topic makes one job of that task, on
-- the subscription's queue (NULL: the task's default from the catalog, then `default`).
CREATE TABLE IF NOT EXISTS topic_subscriptions (
    pattern       text NOT NULL CHECK (topic_pattern_ok(pattern)),
    task          text NOT NULL
                  CHECK (task ~ '^[A-Za-z0-9_][A-Za-z0-9_.:-]*$' AND char_length(task) <= 128),
    queue         text
                  CHECK (queue ~ '^[A-Za-z0-9_][A-Za-z0-9_.:-]*$' AND char_length(queue) <= 128),
    priority      integer,
    max_attempts  integer CHECK (max_attempts >= 1),
    pattern_re    text GENERATED ALWAYS AS (topic_regex(pattern)) STORED,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pattern, task)
);

-- The wildcard subscriptions, the only ones a publish tests with a regular expression.
CREATE INDEX IF NOT EXISTS topic_subscriptions_wild_idx ON topic_subscriptions (task)
    INCLUDE (pattern_re) WHERE pattern_re IS NOT NULL;

-- Publish: one job per task whose subscription matches `p_topic`, for each argument object
-- in `p_args` (a JSON array), in the caller's transaction. Returns the jobs made (none when
-- nothing subscribes). A task subscribed through two matching patterns gets one job per
-- message (its exact subscription's options win, then the first pattern in sort order).
--
-- Each subscription's jobs go through `enqueue_many`: one statement per subscription, its
-- queue's defaults and rules applied, and one wake-up per queue at commit (identical
-- notifications of a transaction fold). An error in any of them (a full queue, an argument
-- that is not an object) aborts the whole publish: all or nothing.
CREATE OR REPLACE FUNCTION publish_jobs(p_topic text, p_args jsonb)
    RETURNS TABLE (id bigint, task text)
    LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT
AS $$
DECLARE
    s record;
BEGIN
    IF p_topic IS NULL OR NOT topic_ok(p_topic) THEN
        RAISE EXCEPTION 'invalid topic %: use dot-separated segments of letters, digits, '
                        '''_'', '':'' or ''-'' (128 characters at most); publish to a topic, '
                        'not to a pattern', coalesce(quote_literal(p_topic), 'NULL')
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM set_config('pgqueue.topic', p_topic, true);
    FOR s IN
        SELECT DISTINCT ON (m.task) m.task, m.queue, m.priority, m.max_attempts
          FROM (SELECT t.task, t.queue, t.priority, t.max_attempts, t.pattern, true AS exact
                  FROM topic_subscriptions AS t
                 WHERE t.pattern = p_topic
                UNION ALL
                SELECT t.task, t.queue, t.priority, t.max_attempts, t.pattern, false
                  FROM topic_subscriptions AS t
                 WHERE t.pattern_re IS NOT NULL AND p_topic ~ t.pattern_re) AS m
         ORDER BY m.task, m.exact DESC, m.pattern
    LOOP
        RETURN QUERY
        SELECT e.id, s.task
          FROM enqueue_many(s.task, p_args, s.queue, s.priority, NULL, s.max_attempts,
                            NULL) AS e;
    END LOOP;
    PERFORM set_config('pgqueue.topic', '', true);
END
$$;

-- The public, stable SQL entry point (DESIGN.md section 3): from any client or a trigger.
-- Returns how many jobs the publish made.
CREATE OR REPLACE FUNCTION publish(topic text, args jsonb DEFAULT '{}') RETURNS integer
    LANGUAGE sql VOLATILE SET search_path FROM CURRENT
AS $$
    SELECT count(*)::integer FROM publish_jobs(topic, jsonb_build_array(coalesce(args, '{}')))
$$;

-- --- schedules ------------------------------------------------------------------------------

-- One row per schedule, written by the workers that declare it (`app.periodic`). `last_slot`
-- is the latest slot that made a job: it only ever moves forward, in the same transaction as
-- that job's insert (`fire_schedule`), so a slot makes exactly one job whoever fires it, and
-- it does not depend on the job still existing (pruning cannot resurrect a slot).
CREATE TABLE IF NOT EXISTS cron_schedules (
    name         text PRIMARY KEY
                 CHECK (name ~ '^[A-Za-z0-9_][A-Za-z0-9_.:-]*$' AND char_length(name) <= 128),
    task         text NOT NULL
                 CHECK (task ~ '^[A-Za-z0-9_][A-Za-z0-9_.:-]*$' AND char_length(task) <= 128),
    cron         text NOT NULL,
    tz           text NOT NULL,
    args         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(args) = 'object'),
    queue        text
                 CHECK (queue ~ '^[A-Za-z0-9_][A-Za-z0-9_.:-]*$' AND char_length(queue) <= 128),
    priority     integer,
    catch_up     text NOT NULL DEFAULT 'latest' CHECK (catch_up IN ('latest', 'all', 'none')),
    paused       boolean NOT NULL DEFAULT false,
    last_slot    timestamptz,
    last_job_id  bigint,
    next_run_at  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Which worker processes declare which schedules. A schedule fires only while a live worker
-- (heartbeat within its timeout, not stopped) declares it, so a schedule removed from the
-- code stops once the last worker that had it is gone.
CREATE TABLE IF NOT EXISTS cron_declarations (
    schedule     text NOT NULL REFERENCES cron_schedules (name) ON DELETE CASCADE,
    worker_id    uuid NOT NULL,
    declared_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule, worker_id)
);
CREATE INDEX IF NOT EXISTS cron_declarations_worker_idx ON cron_declarations (worker_id);

-- How many live workers declare the schedule.
CREATE OR REPLACE FUNCTION schedule_declarers(p_name text) RETURNS integer
    LANGUAGE sql STABLE SET search_path FROM CURRENT
AS $$
    SELECT count(*)::integer
      FROM cron_declarations AS d
      JOIN workers AS w ON w.id = d.worker_id
     WHERE d.schedule = p_name
       AND w.stopped_at IS NULL
       AND w.heartbeat_at > now() - make_interval(secs => w.heartbeat_timeout)
$$;

-- Fire the slots `p_slots` (ascending) of a schedule: one job per slot later than its
-- `last_slot`, each through `enqueue_job`, and `last_slot` moved to the last one, all in
-- the caller's one transaction. The row lock taken first serializes firers: a second leader
-- (two can overlap for a moment while a lease expires) waits here, then reads the slot the
-- first one committed and makes nothing for it. A paused schedule, or one no live worker
-- declares, makes nothing. Returns the (slot, job id) pairs made.
CREATE OR REPLACE FUNCTION fire_schedule(p_name text, p_slots timestamptz[],
                                         p_next_run_at timestamptz)
    RETURNS TABLE (slot timestamptz, job_id bigint)
    LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT
AS $$
DECLARE
    s       cron_schedules%ROWTYPE;
    v_slot  timestamptz;
    v_id    bigint;
BEGIN
    SELECT * INTO s FROM cron_schedules AS c WHERE c.name = p_name FOR UPDATE;
    IF NOT FOUND OR s.paused OR schedule_declarers(p_name) = 0 THEN
        RETURN;
    END IF;
    FOREACH v_slot IN ARRAY coalesce(p_slots, '{}') LOOP
        CONTINUE WHEN s.last_slot IS NOT NULL AND v_slot <= s.last_slot;
        SELECT e.id INTO v_id
          FROM enqueue_job(s.task, s.args, s.queue, s.priority, NULL, NULL, NULL, NULL) AS e;
        UPDATE jobs AS j SET schedule = p_name, scheduled_for = v_slot WHERE j.id = v_id;
        s.last_slot := v_slot;
        s.last_job_id := v_id;
        slot := v_slot;
        job_id := v_id;
        RETURN NEXT;
    END LOOP;
    UPDATE cron_schedules AS c
       SET last_slot = s.last_slot, last_job_id = s.last_job_id,
           next_run_at = coalesce(p_next_run_at, c.next_run_at)
     WHERE c.name = p_name;
END
$$;

-- --- views ----------------------------------------------------------------------------------

-- Subscriptions, with the queue their jobs go to and how many jobs publishes made for them
-- in the last hour (jobs of the task on a topic the pattern matches; read through
-- jobs_topic_idx).
CREATE OR REPLACE VIEW subscriptions AS
SELECT s.pattern,
       s.task,
       coalesce(s.queue, t.queue, default_queue()) AS queue,
       s.created_at,
       (SELECT count(*)
          FROM jobs AS j
         WHERE j.task = s.task
           AND j.topic IS NOT NULL
           AND j.created_at > now() - interval '1 hour'
           AND (j.topic = s.pattern OR j.topic ~ s.pattern_re)) AS published_last_hour,
       s.priority,
       s.max_attempts
  FROM topic_subscriptions AS s
  LEFT JOIN tasks AS t ON t.name = s.task;

CREATE OR REPLACE VIEW schedules AS
SELECT c.name,
       c.task,
       c.cron,
       c.tz,
       c.next_run_at,
       c.last_slot,
       c.last_job_id,
       c.paused,
       schedule_declarers(c.name) AS declared_by_live_workers,
       c.catch_up,
       coalesce(c.queue, t.queue, default_queue()) AS queue,
       c.args,
       (SELECT j.state FROM jobs AS j WHERE j.id = c.last_job_id) AS last_job_state
  FROM cron_schedules AS c
  LEFT JOIN tasks AS t ON t.name = c.task;
