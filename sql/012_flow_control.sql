-- Flow control (DESIGN.md section 8): queue settings, group_key, concurrency and rate
-- limits across all workers, fairness between groups, back pressure (QueueFull), expiry.
--
-- How the limits hold across processes, in one paragraph: a queue with any limit (or `fair`)
-- is claimed only by `claim_limited` below, never by the plain claim (job_claim.sql skips a
-- queue whose row says `limited`, in the same check as a pause, so a limit set now applies
-- to the very next claim of every worker). `claim_limited` first locks the queue's row in
-- `queue_flow`, which serializes the claims of that queue until each commits, and only then
-- reads what is in use, in statements that take a fresh snapshot: every earlier claim of the
-- queue is visible to it, so nothing is counted twice or missed, under READ COMMITTED, with
-- no serialization failure and no retry. What is "in use" is read from the rows themselves:
-- a concurrency slot is a `flow_holders` row naming a job and the lease of the claim that
-- took it, and it is held exactly as long as that job still carries that lease. Every way
-- out of `running` (outcome, failure, rescue, release) clears the lease, fenced by it, so a
-- killed worker's slots come back when its jobs are rescued, not before, and a stale
-- worker's late outcome (its lease long gone) frees nothing. No completion statement had to
-- change for this: the slot's state is derived, never released by hand.
--
-- Rates are a sliding log per queue and per (queue, group): the start times of recent
-- grants with their counts (one entry per claim, not per job), trimmed to the period. A
-- claim may start a job at time t only if fewer than N starts lie in [t - period, t], so no
-- window of the period ever holds more than N starts, and the log says exactly when the
-- next start is permitted: the claim returns that wait, and the worker sleeps until then.
-- The clock is the database's (clock_timestamp() taken after the queue's lock, so the
-- starts of one queue are recorded in lock order), and started_at is that same instant.

-- group_key: the roadmap column `tenant`, under the name the API uses. Existing rows hold
-- NULL (nothing wrote it), so the check is not re-validated against them. The empty string
-- is what the enqueue functions store for a job without a group in a queue with group
-- limits or fairness: it puts those jobs in jobs_claim_group_idx as one group of their own
-- (with no group limits), so a fair or grouped claim finds them by one index seek like any
-- group. Every reader shows it as NULL; Python refuses it as a group_key.
ALTER TABLE jobs RENAME COLUMN tenant TO group_key;
ALTER TABLE jobs
    ADD CONSTRAINT jobs_group_key_check CHECK (char_length(group_key) <= 255) NOT VALID;

-- A job not started by then is cancelled as expired (NULL: never expires).
ALTER TABLE jobs ADD COLUMN expires_at timestamptz;

-- The fair/grouped claim walks the group keys of one queue and priority, one index seek
-- per group (a loose index scan), and reads each group's head in run_at order. Partial on
-- jobs that have a group_key, so a job without one costs this index nothing.
CREATE INDEX jobs_claim_group_idx ON jobs (queue, priority DESC, group_key, run_at, id)
    WHERE group_key IS NOT NULL AND state IN ('scheduled', 'available', 'retrying');

-- The leader's expiry sweep finds due expiries without reading the backlog.
CREATE INDEX jobs_expiry_idx ON jobs (expires_at)
    WHERE expires_at IS NOT NULL AND state IN ('scheduled', 'available', 'retrying');

-- Queue settings: one row per queue that has any (created by pause or configure_queue).
-- A rate is N starts per period (seconds). `limited` says the plain claim must leave the
-- queue to claim_limited.
ALTER TABLE queues
    ADD COLUMN concurrency       integer CHECK (concurrency > 0),
    ADD COLUMN rate_limit        integer CHECK (rate_limit > 0),
    ADD COLUMN rate_period       double precision CHECK (rate_period > 0),
    ADD COLUMN group_concurrency integer CHECK (group_concurrency > 0),
    ADD COLUMN group_rate_limit  integer CHECK (group_rate_limit > 0),
    ADD COLUMN group_rate_period double precision CHECK (group_rate_period > 0),
    ADD COLUMN fair              boolean NOT NULL DEFAULT false,
    -- Waiting jobs (scheduled, available, retrying) as the leader last counted them, at most
    -- max_depth + 1: the enqueue functions trust it only far from the limit.
    ADD COLUMN depth_estimate    integer,
    ADD COLUMN depth_at          timestamptz,
    ADD CONSTRAINT queues_rate_pair CHECK ((rate_limit IS NULL) = (rate_period IS NULL)),
    ADD CONSTRAINT queues_group_rate_pair
        CHECK ((group_rate_limit IS NULL) = (group_rate_period IS NULL)),
    ADD COLUMN limited boolean GENERATED ALWAYS AS (
        concurrency IS NOT NULL OR rate_limit IS NOT NULL OR group_concurrency IS NOT NULL
        OR group_rate_limit IS NOT NULL OR fair) STORED;

-- A worker records the queues it leaves alone (`--exclude-queue`), so "is any live worker
-- serving this queue?" can be answered (queue_stats.live_workers).
ALTER TABLE workers ADD COLUMN exclude_queues text[];

-- The claim state of a limited queue: its lock serializes the queue's claims; the rate log;
-- where the fair walk continues. Created on first claim.
CREATE TABLE queue_flow (
    queue         text PRIMARY KEY,
    starts_at     timestamptz[] NOT NULL DEFAULT '{}',
    starts_n      integer[] NOT NULL DEFAULT '{}',
    group_cursor  text,
    -- When a fair claim last looked for jobs without a group and found none: it looks
    -- again once the rotation passes their turn and a second has gone by.
    ungrouped_none_at timestamptz
);

-- The rate log of one group of a queue with group_rate (written under the queue's lock).
CREATE TABLE group_flow (
    queue      text NOT NULL,
    group_key  text NOT NULL,
    starts_at  timestamptz[] NOT NULL DEFAULT '{}',
    starts_n   integer[] NOT NULL DEFAULT '{}',
    last_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue, group_key)
);

-- Concurrency slots in use: one row per job claimed from a queue with concurrency or
-- group_concurrency, held while the job carries this lease (see the top of this file).
CREATE TABLE flow_holders (
    job_id     bigint PRIMARY KEY,
    lease      uuid NOT NULL,
    queue      text NOT NULL,
    group_key  text
);
CREATE INDEX flow_holders_queue_idx ON flow_holders (queue, group_key);

-- Enqueues refused with QueueFull, from every client. A sequence, because it is the one
-- counter a rolled-back transaction (a refusal aborts the caller's) does not undo.
CREATE SEQUENCE rejected_enqueues;

-- `N/s`, `N/m`, `N/h`, `N/d` or `N/<seconds>s` -> (N, period in seconds); NULL for NULL.
CREATE FUNCTION parse_rate(p_rate text, OUT n integer, OUT period double precision)
    LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    m text[];
BEGIN
    IF p_rate IS NULL THEN
        RETURN;
    END IF;
    m := regexp_match(p_rate, '^\s*([0-9]{1,9})\s*/\s*([0-9]*\.?[0-9]*)\s*([smhd])\s*$');
    IF m IS NULL OR m[1]::integer <= 0 OR (m[2] <> '' AND m[2] !~ '[0-9]') THEN
        RAISE EXCEPTION 'invalid rate %: use N/s, N/m, N/h, N/d or N/<seconds>s, N > 0',
                        quote_literal(p_rate)
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF m[2] <> '' AND m[3] <> 's' THEN
        RAISE EXCEPTION 'invalid rate %: a number of units is written in seconds (N/30s)',
                        quote_literal(p_rate)
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    n := m[1]::integer;
    period := CASE m[3] WHEN 's' THEN 1 WHEN 'm' THEN 60 WHEN 'h' THEN 3600 ELSE 86400 END
              * CASE WHEN m[2] = '' THEN 1 ELSE m[2]::double precision END;
    IF period <= 0 OR period > 366 * 86400 THEN
        RAISE EXCEPTION 'invalid rate %: the period must be more than 0 s and at most a year',
                        quote_literal(p_rate)
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- (N, period) -> the canonical text `N/s`, `N/m`, `N/h`, `N/d` or `N/<seconds>s`.
CREATE FUNCTION format_rate(p_n integer, p_period double precision) RETURNS text
    LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE WHEN p_n IS NULL THEN NULL
                WHEN p_period = 1 THEN p_n || '/s'
                WHEN p_period = 60 THEN p_n || '/m'
                WHEN p_period = 3600 THEN p_n || '/h'
                WHEN p_period = 86400 THEN p_n || '/d'
                ELSE p_n || '/' || p_period || 's' END
$$;

-- Set a queue's settings from psql, a migration or a trigger; the Python API calls it too.
-- `p_settings` is a JSON object: a key present sets that setting (JSON null removes it), a
-- key absent leaves it as it is. Keys: concurrency, rate, group_concurrency, group_rate,
-- fair, max_depth. Returns the queue's settings after the change.
--   SELECT * FROM pgqueue.configure_queue('exports', '{"concurrency": 5, "rate": "20/s"}');
CREATE FUNCTION configure_queue(p_queue text, p_settings jsonb DEFAULT '{}')
RETURNS TABLE (queue text, concurrency integer, rate text, group_concurrency integer,
               group_rate text, fair boolean, max_depth integer, paused boolean)
    LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT
AS $$
#variable_conflict use_column
DECLARE
    v_key   text;
    v_row   queues;
    v_rate  record;
    v_grate record;
BEGIN
    IF p_queue IS NULL OR p_queue !~ '^[A-Za-z0-9_][A-Za-z0-9_.:-]*$'
       OR char_length(p_queue) > 128 THEN
        RAISE EXCEPTION 'invalid queue name %: use 1-128 letters, digits, _ . : or -',
                        quote_nullable(p_queue)
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF jsonb_typeof(p_settings) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'queue settings must be a JSON object'
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR v_key IN SELECT jsonb_object_keys(p_settings) LOOP
        IF v_key NOT IN ('concurrency', 'rate', 'group_concurrency', 'group_rate', 'fair',
                         'max_depth') THEN
            RAISE EXCEPTION 'unknown queue setting %', quote_literal(v_key)
                  USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF v_key IN ('concurrency', 'group_concurrency', 'max_depth')
           AND jsonb_typeof(p_settings -> v_key) <> 'null'
           AND (jsonb_typeof(p_settings -> v_key) <> 'number'
                OR (p_settings ->> v_key) !~ '^[0-9]{1,10}$'
                OR (p_settings ->> v_key)::bigint NOT BETWEEN 1 AND 2147483647) THEN
            RAISE EXCEPTION '% must be a positive integer, not %', v_key, p_settings -> v_key
                  USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF v_key IN ('rate', 'group_rate') AND jsonb_typeof(p_settings -> v_key)
                                                NOT IN ('null', 'string') THEN
            RAISE EXCEPTION '% must be a rate such as "20/s", not %', v_key,
                            p_settings -> v_key
                  USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF v_key = 'fair' AND jsonb_typeof(p_settings -> v_key) NOT IN ('null', 'boolean') THEN
            RAISE EXCEPTION 'fair must be true or false, not %', p_settings -> v_key
                  USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    v_rate := parse_rate(p_settings ->> 'rate');
    v_grate := parse_rate(p_settings ->> 'group_rate');

    INSERT INTO queues AS q (name) VALUES (p_queue) ON CONFLICT (name) DO NOTHING;
    UPDATE queues AS q
       SET concurrency = CASE WHEN p_settings ? 'concurrency'
                              THEN (p_settings ->> 'concurrency')::integer
                              ELSE q.concurrency END,
           rate_limit = CASE WHEN p_settings ? 'rate' THEN v_rate.n ELSE q.rate_limit END,
           rate_period = CASE WHEN p_settings ? 'rate' THEN v_rate.period
                              ELSE q.rate_period END,
           group_concurrency = CASE WHEN p_settings ? 'group_concurrency'
                                    THEN (p_settings ->> 'group_concurrency')::integer
                                    ELSE q.group_concurrency END,
           group_rate_limit = CASE WHEN p_settings ? 'group_rate' THEN v_grate.n
                                   ELSE q.group_rate_limit END,
           group_rate_period = CASE WHEN p_settings ? 'group_rate' THEN v_grate.period
                                    ELSE q.group_rate_period END,
           fair = CASE WHEN p_settings ? 'fair'
                       THEN coalesce((p_settings ->> 'fair')::boolean, false)
                       ELSE q.fair END,
           max_depth = CASE WHEN p_settings ? 'max_depth'
                            THEN (p_settings ->> 'max_depth')::integer
                            ELSE q.max_depth END,
           depth_estimate = CASE WHEN p_settings ? 'max_depth' THEN NULL
                                 ELSE q.depth_estimate END,
           updated_at = now()
     WHERE q.name = p_queue
    RETURNING q.* INTO v_row;

    -- Waiting jobs without a group join the queue's ungrouped group ('' above), so a
    -- grouped claim reaches them by the index like any group.
    IF v_row.fair OR v_row.group_concurrency IS NOT NULL OR v_row.group_rate_limit IS NOT NULL
    THEN
        UPDATE jobs AS j SET group_key = ''
         WHERE j.queue = p_queue AND j.group_key IS NULL
           AND j.state IN ('scheduled', 'available', 'retrying');
    END IF;
    -- Jobs already running count against a new concurrency limit: they hold slots from now
    -- until they leave `running`, as if the limited claim had taken them.
    IF v_row.concurrency IS NOT NULL OR v_row.group_concurrency IS NOT NULL THEN
        INSERT INTO flow_holders (job_id, lease, queue, group_key)
        SELECT j.id, j.lease, j.queue, j.group_key
          FROM jobs AS j
         WHERE j.state = 'running' AND j.queue = p_queue AND j.lease IS NOT NULL
        ON CONFLICT (job_id) DO NOTHING;
    END IF;
    -- Workers serving this queue claim at once under the new settings.
    PERFORM pg_notify(notify_channel(), p_queue);

    RETURN QUERY SELECT v_row.name, v_row.concurrency,
                        format_rate(v_row.rate_limit, v_row.rate_period),
                        v_row.group_concurrency,
                        format_rate(v_row.group_rate_limit, v_row.group_rate_period),
                        v_row.fair, v_row.max_depth, v_row.paused;
END
$$;

-- Starts recorded in a rate log at or after `p_since`.
CREATE FUNCTION flow_used(p_at timestamptz[], p_n integer[], p_since timestamptz)
RETURNS integer
    LANGUAGE sql IMMUTABLE
AS $$
    SELECT coalesce(sum(n), 0)::integer FROM unnest(p_at, p_n) AS l(at, n) WHERE at >= p_since
$$;

-- Seconds from `p_now` until `p_need` more starts fit in a log limited to `p_limit` per
-- `p_period`: when enough of the oldest entries in the window have aged out.
CREATE FUNCTION flow_wait(p_at timestamptz[], p_n integer[], p_now timestamptz,
                          p_limit integer, p_period double precision, p_need integer)
RETURNS double precision
    LANGUAGE sql IMMUTABLE
AS $$
    -- An entry ages out just after at + period; once it has, what is left in the window is
    -- the starts newer than it. The earliest entry whose aging out leaves room decides.
    SELECT coalesce(min(extract(epoch FROM (l.at + make_interval(secs => p_period)) - p_now))
                    + 0.001, 0)::double precision
      FROM (SELECT at, coalesce(sum(n) OVER (ORDER BY at DESC
                                             ROWS BETWEEN UNBOUNDED PRECEDING
                                                      AND 1 PRECEDING), 0) AS newer
              FROM unnest(p_at, p_n) AS u(at, n)
             WHERE at >= p_now - make_interval(secs => p_period)) AS l
     WHERE l.newer <= p_limit - p_need
$$;

-- A log with `p_k` starts at `p_now` added and entries older than the window dropped.
CREATE FUNCTION flow_append(INOUT p_at timestamptz[], INOUT p_n integer[], p_now timestamptz,
                            p_period double precision, p_k integer)
    LANGUAGE sql IMMUTABLE
AS $$
    SELECT coalesce(array_agg(at ORDER BY at), '{}'), coalesce(array_agg(n ORDER BY at), '{}')
      FROM (SELECT at, n FROM unnest(p_at, p_n) AS u(at, n)
             WHERE at >= p_now - make_interval(secs => p_period)
            UNION ALL
            SELECT p_now, p_k WHERE p_k > 0) AS l
$$;

-- Seconds a worker held back by a concurrency limit waits before it looks again, when the
-- slots are held by other workers (its own finishing jobs wake it at once).
CREATE FUNCTION flow_concurrency_wait() RETURNS double precision
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT 0.2::double precision $$;

-- Candidates of one queue with group limits or fairness: up to `p_cap` due jobs, priority
-- first; within a priority, groups are visited by a loose index scan over group keys
-- (jobs_claim_group_idx, one seek per group) starting after the queue's cursor and
-- wrapping around, so every group with work is reached within ceil(groups / cap) claims.
-- A group at its group_concurrency or group_rate is skipped after one probe. Each eligible
-- group offers its head jobs (in run_at order, at most its allowance); `fair` takes them
-- round-robin (first job of every group, then second, ...), otherwise in FIFO order. Jobs
-- without a group_key form one more group with no group limits. Cost: O(groups visited +
-- jobs taken) index reads, whatever the biggest group's backlog and however many groups
-- are idle (an idle group has no row in the partial index). Internal (caller's path).
CREATE FUNCTION flow_candidates(
    p_queue text, p_cap integer, p_fair boolean,
    p_gconc integer, p_grate integer, p_gperiod double precision,
    p_now timestamptz, p_suspects boolean, p_quarantine integer,
    INOUT p_cursor text, INOUT p_ungrouped_none_at timestamptz,
    OUT o_ids bigint[], OUT o_groups text[], OUT o_wait double precision,
    OUT o_more boolean, OUT o_bound text[])
    LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_level     integer;
    v_levels    integer := 0;
    v_need      integer := p_cap;
    v_g         text;
    v_start     text;
    v_wrapped   boolean;
    v_passed    boolean;
    v_look      boolean;
    v_visits    integer;
    v_keys      text[];
    v_allow     integer[];
    v_a         integer;
    v_used      integer;
    v_log       record;
    v_null_head boolean;
    v_ids       bigint[];
    v_grp       text[];
    v_share     integer;
    v_cut       boolean;
BEGIN
    o_ids := '{}';
    o_groups := '{}';
    o_bound := '{}';
    o_more := false;
    LOOP
        EXIT WHEN v_need <= 0 OR v_levels >= 4;
        -- The next priority level that has waiting jobs (jobs_claim_queue_idx, one seek).
        SELECT j.priority INTO v_level
          FROM jobs AS j
         WHERE j.queue = p_queue AND j.state IN ('scheduled', 'available', 'retrying')
           AND (v_levels = 0 OR j.priority < v_level)
         ORDER BY j.priority DESC
         LIMIT 1;
        EXIT WHEN NOT FOUND;
        v_levels := v_levels + 1;

        -- Walk the groups of this level after the cursor, wrapping once.
        v_keys := '{}';
        v_allow := '{}';
        v_start := p_cursor;
        v_g := p_cursor;
        v_wrapped := p_cursor IS NULL;
        v_passed := p_cursor IS NULL;
        v_visits := 0;
        LOOP
            EXIT WHEN cardinality(v_keys) >= v_need OR v_visits >= greatest(4 * p_cap, 64);
            IF v_g IS NULL THEN  -- from the start: the ungrouped group ('') first
                SELECT j.group_key INTO v_g
                  FROM jobs AS j
                 WHERE j.queue = p_queue AND j.priority = v_level AND j.group_key IS NOT NULL
                   AND j.state IN ('scheduled', 'available', 'retrying')
                 ORDER BY j.group_key
                 LIMIT 1;
            ELSE
                SELECT j.group_key INTO v_g
                  FROM jobs AS j
                 WHERE j.queue = p_queue AND j.priority = v_level AND j.group_key IS NOT NULL
                   AND j.state IN ('scheduled', 'available', 'retrying')
                   AND j.group_key > v_g
                 ORDER BY j.group_key
                 LIMIT 1;
            END IF;
            IF NOT FOUND THEN
                v_passed := true;
                EXIT WHEN v_wrapped;
                v_wrapped := true;
                v_g := NULL;
                CONTINUE;
            END IF;
            EXIT WHEN v_wrapped AND v_start IS NOT NULL AND v_g > v_start;
            v_visits := v_visits + 1;
            v_a := v_need;
            IF p_gconc IS NOT NULL AND v_g <> '' THEN
                SELECT count(*) INTO v_used FROM flow_holders AS h
                 WHERE h.queue = p_queue AND h.group_key = v_g;
                v_a := least(v_a, p_gconc - v_used);
                IF v_a <= 0 THEN
                    o_wait := least(o_wait, flow_concurrency_wait());
                END IF;
            END IF;
            IF p_grate IS NOT NULL AND v_a > 0 AND v_g <> '' THEN
                SELECT gf.starts_at, gf.starts_n INTO v_log FROM group_flow AS gf
                 WHERE gf.queue = p_queue AND gf.group_key = v_g;
                v_used := CASE WHEN FOUND
                               THEN flow_used(v_log.starts_at, v_log.starts_n,
                                              p_now - make_interval(secs => p_gperiod))
                               ELSE 0 END;
                IF p_grate - v_used < v_a THEN
                    o_bound := o_bound || v_g;  -- its wait is read once its starts are logged
                END IF;
                v_a := least(v_a, p_grate - v_used);
            END IF;
            IF v_a > 0 THEN
                v_keys := v_keys || v_g;
                v_allow := v_allow || v_a;
            END IF;
            p_cursor := v_g;
        END LOOP;

        -- Jobs without a group: one group more, with no group limits. No index finds them
        -- apart (jobs_claim_group_idx holds grouped jobs only, so that ungrouped jobs of
        -- plain queues pay nothing for it), so they are looked for near the head of the
        -- queue's claim order only: a bounded read, never a walk over a grouped backlog.
        -- Their turn is at the start of the rotation: a claim whose walk passed it looks,
        -- and after a look that found none, not again for a second.
        v_look := (v_passed OR cardinality(v_keys) < v_need)
                  AND (p_ungrouped_none_at IS NULL
                       OR p_ungrouped_none_at < p_now - interval '1 second');
        v_null_head := v_look AND EXISTS (
            SELECT 1 FROM (SELECT j.group_key FROM jobs AS j
                            WHERE j.queue = p_queue AND j.priority = v_level
                              AND j.state IN ('scheduled', 'available', 'retrying')
                              AND j.run_at <= now()
                            ORDER BY j.priority DESC, j.run_at, j.id
                            LIMIT 4 * p_cap + 16) AS head
             WHERE head.group_key IS NULL);
        IF v_look THEN
            p_ungrouped_none_at := CASE WHEN v_null_head THEN NULL ELSE p_now END;
        END IF;
        CONTINUE WHEN cardinality(v_keys) = 0 AND NOT v_null_head;

        -- Each group's share of this claim; more remain for the next one (o_more).
        v_share := ceil(v_need::numeric / (cardinality(v_keys) + v_null_head::integer));
        SELECT coalesce(array_agg(c.id ORDER BY CASE WHEN p_fair THEN c.rn END, c.pos,
                                                c.run_at, c.id), '{}'),
               coalesce(array_agg(c.group_key ORDER BY CASE WHEN p_fair THEN c.rn END, c.pos,
                                                       c.run_at, c.id), '{}'),
               coalesce(bool_or(c.rn = v_share AND c.allow > v_share), false)
          INTO v_ids, v_grp, v_cut
          FROM (SELECT h.id, h.group_key, h.run_at, h.rn,
                       CASE WHEN p_fair THEN g.pos ELSE 0 END AS pos, g.allow
                  FROM unnest(v_keys, v_allow) WITH ORDINALITY AS g(key, allow, pos)
                 CROSS JOIN LATERAL (
                       SELECT j.id, j.group_key, j.run_at,
                              row_number() OVER (ORDER BY j.run_at, j.id) AS rn
                         FROM jobs AS j
                        WHERE j.queue = p_queue AND j.priority = v_level
                          AND j.group_key = g.key
                          AND j.state IN ('scheduled', 'available', 'retrying')
                          AND j.run_at <= now()
                          AND (j.expires_at IS NULL OR j.expires_at > now())
                          AND (j.rescue_count >= p_quarantine) = p_suspects
                        ORDER BY j.run_at, j.id
                        LIMIT least(g.allow, v_share)) AS h
                UNION ALL
                SELECT n.id, NULL, n.run_at, n.rn, 0, v_share
                  FROM (SELECT h.id, h.run_at, row_number() OVER (ORDER BY h.run_at, h.id) AS rn
                          FROM (SELECT j.id, j.run_at, j.group_key, j.expires_at,
                                       j.rescue_count
                                  FROM jobs AS j
                                 WHERE v_null_head AND j.queue = p_queue
                                   AND j.priority = v_level
                                   AND j.state IN ('scheduled', 'available', 'retrying')
                                   AND j.run_at <= now()
                                 ORDER BY j.priority DESC, j.run_at, j.id
                                 LIMIT 4 * p_cap + 16) AS h
                         WHERE h.group_key IS NULL
                           AND (h.expires_at IS NULL OR h.expires_at > now())
                           AND (h.rescue_count >= p_quarantine) = p_suspects
                         ORDER BY h.run_at, h.id
                         LIMIT v_share) AS n) AS c;
        -- Fair: round r of every group before round r + 1; FIFO otherwise. Then the cap.
        IF cardinality(v_ids) > v_need THEN
            v_ids := v_ids[1:v_need];
            v_grp := v_grp[1:v_need];
        END IF;
        o_ids := o_ids || v_ids;
        o_groups := o_groups || v_grp;
        v_need := v_need - cardinality(v_ids);
        -- A group held to its share may have more at this priority: lower priorities wait
        -- for the next claim, which the worker makes at once (o_more).
        IF v_cut THEN
            o_more := true;
            EXIT;
        END IF;
    END LOOP;
END
$$;

-- The claim of limited queues (DESIGN.md section 8): record the worker's successes, then for
-- each of `p_queues` that is limited and not paused, in name order (so two claimers lock
-- queues in one order and never deadlock): lock its queue_flow row, read the slots and the
-- rate log as of now, claim at most what every limit allows, record the slots and starts.
-- Same rows as job_claim.sql: claimed jobs (true), accepted completions (false); plus at
-- most one hint row (claimed NULL) whose `timeout` column is the seconds until a limit
-- permits the next start (0: more could be claimed at once).
--
-- A job a limit holds back is never touched: it stays `available` with its attempt unspent.
-- The successes are recorded first, so the slots they held are free for this same claim.
CREATE FUNCTION claim_limited(
    p_queues text[], p_worker_id uuid, p_limit integer,
    p_ids bigint[], p_leases uuid[], p_results jsonb, p_done_channel text,
    p_suspects boolean DEFAULT false, p_quarantine integer DEFAULT 2,
    p_began double precision[] DEFAULT '{}', p_start integer DEFAULT NULL)
RETURNS TABLE (claimed boolean, id bigint, task text, queue text, args jsonb,
               attempt integer, max_attempts integer, lease text, timeout double precision,
               started boolean, trace jsonb, scheduled_for timestamptz,
               priority integer, run_at timestamptz)
    LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT
AS $$
#variable_conflict use_column
DECLARE
    v_queues  queues[];
    v_q       queues;
    v_flow    queue_flow;
    v_now     timestamptz;
    v_left    integer := p_limit;
    v_cap     integer;
    v_used    integer;
    v_wait    double precision;
    v_more    boolean := false;
    v_cand    record;
    v_ids     bigint[];
    v_groups  text[];
    v_taken   integer;
    v_holds   boolean;
    v_rate_bound boolean;
    v_conc_bound boolean;
    -- Rows that take a free slot at once (job_claim.sql's `start`): the rest of a fair
    -- queue's prefetch waits in the worker's buffer, claimed but not started.
    v_start_left integer := coalesce(p_start, p_limit);
BEGIN
    IF cardinality(p_ids) > 0 THEN
        RETURN QUERY
        WITH done AS (
            -- As job_claim.sql, a start not recorded yet (`p_began`: seconds since it) is
            -- recorded with the outcome.
            UPDATE jobs AS j
               SET state = 'completed', lease = NULL,
                   result = p_results -> (c.n::integer - 1), finished_at = now(),
                   attempt = j.attempt + (j.started_at IS NULL)::integer,
                   started_at = coalesce(j.started_at, now() - make_interval(secs => c.began),
                                         now())
              FROM unnest(p_ids, p_leases, p_began) WITH ORDINALITY AS c(id, lease, began, n)
             WHERE j.id = c.id AND j.lease = c.lease
            RETURNING j.id
        )
        SELECT false, d.id, NULL::text, NULL::text, NULL::jsonb, NULL::integer,
               NULL::integer, NULL::text, NULL::double precision, NULL::boolean,
               NULL::jsonb, NULL::timestamptz, NULL::integer, NULL::timestamptz
          FROM done AS d, LATERAL (SELECT pg_notify(p_done_channel, '')) AS wake;
    ELSE
        -- As job_claim.sql: a claim that records no outcome need not wait for its flush.
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    IF p_limit <= 0 THEN
        RETURN;
    END IF;

    SELECT coalesce(array_agg(q ORDER BY q.name), '{}') INTO v_queues
      FROM queues AS q
     WHERE q.name = ANY(p_queues) AND q.limited AND NOT q.paused;

    IF cardinality(v_queues) = 0 THEN
        RETURN;
    END IF;
    -- The serialization point: until this transaction commits, no other claim of these
    -- queues runs, and the statements below take fresh snapshots that see every earlier
    -- one. Locked in name order, all at once, so two claimers never deadlock; then served
    -- from a random starting point, so no limited queue keeps another from being claimed.
    SELECT count(*) INTO v_taken FROM (
        SELECT 1 FROM queue_flow AS f
         WHERE f.queue = ANY (ARRAY(SELECT (x).name FROM unnest(v_queues) AS x))
         ORDER BY f.queue
           FOR UPDATE) AS locked;
    IF v_taken < cardinality(v_queues) THEN
        INSERT INTO queue_flow (queue)
        SELECT (x).name FROM unnest(v_queues) AS x ORDER BY 1
        ON CONFLICT DO NOTHING;
        PERFORM 1 FROM queue_flow AS f
         WHERE f.queue = ANY (ARRAY(SELECT (x).name FROM unnest(v_queues) AS x))
         ORDER BY f.queue
           FOR UPDATE;
    END IF;
    v_taken := floor(random() * cardinality(v_queues))::integer;
    v_queues := v_queues[v_taken + 1:] || v_queues[1:v_taken];

    FOREACH v_q IN ARRAY v_queues LOOP
        EXIT WHEN v_left <= 0;
        SELECT * INTO v_flow FROM queue_flow AS f WHERE f.queue = v_q.name;
        v_now := clock_timestamp();
        v_cap := v_left;
        v_holds := v_q.concurrency IS NOT NULL OR v_q.group_concurrency IS NOT NULL;

        IF v_holds THEN
            -- Slots whose job no longer carries the lease that took them are free again.
            DELETE FROM flow_holders AS h
             WHERE h.queue = v_q.name
               AND NOT EXISTS (SELECT 1 FROM jobs AS j
                                WHERE j.id = h.job_id AND j.lease = h.lease);
        END IF;
        -- What the queue-wide limits allow, and the wait they would impose if they, not
        -- the backlog, stop this claim (known once the claim is made: below).
        v_conc_bound := false;
        v_rate_bound := false;
        IF v_q.concurrency IS NOT NULL THEN
            SELECT count(*) INTO v_used FROM flow_holders AS h WHERE h.queue = v_q.name;
            v_conc_bound := v_q.concurrency - v_used < v_cap;
            v_cap := least(v_cap, v_q.concurrency - v_used);
        END IF;
        IF v_q.rate_limit IS NOT NULL AND v_cap > 0 THEN
            v_used := flow_used(v_flow.starts_at, v_flow.starts_n,
                                v_now - make_interval(secs => v_q.rate_period));
            v_rate_bound := v_q.rate_limit - v_used < v_cap;
            v_cap := least(v_cap, v_q.rate_limit - v_used);
        END IF;
        IF v_cap <= 0 THEN
            -- Held back entirely: a wait only if a job is waiting to start.
            IF EXISTS (SELECT 1 FROM jobs AS j
                        WHERE j.queue = v_q.name
                          AND j.state IN ('scheduled', 'available', 'retrying')
                          AND j.run_at <= now()) THEN
                IF v_rate_bound OR v_q.concurrency IS NULL
                   OR v_q.concurrency - v_used > 0 THEN
                    v_wait := least(v_wait, flow_wait(v_flow.starts_at, v_flow.starts_n,
                                                      v_now, v_q.rate_limit,
                                                      v_q.rate_period, 1));
                ELSE
                    v_wait := least(v_wait, flow_concurrency_wait());
                END IF;
            END IF;
            CONTINUE;
        END IF;

        IF v_q.group_concurrency IS NULL AND v_q.group_rate_limit IS NULL AND NOT v_q.fair THEN
            -- Only queue-wide limits: the queue's jobs in claim order (jobs_claim_queue_idx).
            SELECT coalesce(array_agg(c.id ORDER BY c.priority DESC, c.run_at, c.id), '{}'),
                   coalesce(array_agg(c.group_key ORDER BY c.priority DESC, c.run_at, c.id),
                            '{}')
              INTO v_ids, v_groups
              FROM (SELECT j.id, j.group_key, j.priority, j.run_at
                      FROM jobs AS j
                     WHERE j.queue = v_q.name
                       AND j.state IN ('scheduled', 'available', 'retrying')
                       AND j.run_at <= now()
                       AND (j.expires_at IS NULL OR j.expires_at > now())
                       AND (j.rescue_count >= p_quarantine) = p_suspects
                     ORDER BY j.priority DESC, j.run_at, j.id
                     LIMIT v_cap
                       FOR UPDATE SKIP LOCKED) AS c;
        ELSE
            SELECT * INTO v_cand
              FROM flow_candidates(v_q.name, v_cap, v_q.fair, v_q.group_concurrency,
                                   v_q.group_rate_limit, v_q.group_rate_period, v_now,
                                   p_suspects, p_quarantine, v_flow.group_cursor,
                                   v_flow.ungrouped_none_at);
            IF v_cand.o_wait IS NOT NULL THEN
                v_wait := least(v_wait, v_cand.o_wait);
            END IF;
            v_more := v_more OR v_cand.o_more;
            -- Lock the fixed candidate set (never a LIMIT under SKIP LOCKED, which could
            -- slide past a locked head onto a job no limit admitted).
            SELECT coalesce(array_agg(j.id ORDER BY c.ord), '{}'),
                   coalesce(array_agg(j.group_key ORDER BY c.ord), '{}')
              INTO v_ids, v_groups
              FROM unnest(v_cand.o_ids) WITH ORDINALITY AS c(id, ord)
              JOIN LATERAL (SELECT jj.id, jj.group_key FROM jobs AS jj
                             WHERE jj.id = c.id
                               AND jj.state IN ('scheduled', 'available', 'retrying')
                               FOR UPDATE SKIP LOCKED) AS j ON true;
            UPDATE queue_flow AS f
               SET group_cursor = v_cand.p_cursor,
                   ungrouped_none_at = v_cand.p_ungrouped_none_at
             WHERE f.queue = v_q.name
               AND (f.group_cursor IS DISTINCT FROM v_cand.p_cursor
                    OR f.ungrouped_none_at IS DISTINCT FROM v_cand.p_ungrouped_none_at);
        END IF;
        v_taken := cardinality(v_ids);
        -- Fewer than the limits allowed: the backlog ran dry, no limit held anything back.
        IF v_taken < v_cap THEN
            v_conc_bound := false;
            v_rate_bound := false;
        END IF;
        IF v_conc_bound THEN
            v_wait := least(v_wait, flow_concurrency_wait());
        END IF;
        IF v_q.group_rate_limit IS NOT NULL AND v_taken = 0 THEN
            -- Every group visited was at its rate: sleep until the first may start again.
            v_wait := least(v_wait, (SELECT min(flow_wait(gf.starts_at, gf.starts_n, v_now,
                                                          v_q.group_rate_limit,
                                                          v_q.group_rate_period, 1))
                                       FROM group_flow AS gf
                                      WHERE gf.queue = v_q.name
                                        AND gf.group_key = ANY (v_cand.o_bound)));
        END IF;
        CONTINUE WHEN v_taken = 0;

        RETURN QUERY
        WITH claimed AS (
            UPDATE jobs AS j
               SET state = 'running',
                   attempt = j.attempt + (array_position(v_ids, j.id) <= v_start_left
                                          OR j.maybe_started OR j.rescue_count > 0)::integer,
                   lease = gen_random_uuid(),
                   worker_id = p_worker_id, cancel_requested = false,
                   started_at = CASE WHEN array_position(v_ids, j.id) <= v_start_left
                                          OR j.maybe_started OR j.rescue_count > 0
                                     THEN v_now END,
                   maybe_started = false
             WHERE j.id = ANY (v_ids)
            RETURNING j.id, j.task, j.queue, j.args,
                      j.attempt + (j.started_at IS NULL)::integer AS attempt, j.max_attempts,
                      j.lease, j.timeout, j.started_at IS NOT NULL AS started, j.trace,
                      j.scheduled_for, j.priority, j.run_at, j.group_key
        ), held AS (
            INSERT INTO flow_holders (job_id, lease, queue, group_key)
            SELECT c.id, c.lease, c.queue, c.group_key FROM claimed AS c WHERE v_holds
            ON CONFLICT (job_id) DO UPDATE SET lease = EXCLUDED.lease
        )
        SELECT true, c.id, c.task, c.queue, c.args, c.attempt, c.max_attempts, c.lease::text,
               c.timeout, c.started, c.trace, c.scheduled_for, c.priority, c.run_at
          FROM claimed AS c
         -- In the order chosen (round-robin for a fair queue): the worker starts them so.
         ORDER BY array_position(v_ids, c.id);

        IF v_q.rate_limit IS NOT NULL THEN
            UPDATE queue_flow AS f
               SET (starts_at, starts_n) = (SELECT a.p_at, a.p_n
                                              FROM flow_append(f.starts_at, f.starts_n, v_now,
                                                               v_q.rate_period, v_taken) AS a)
             WHERE f.queue = v_q.name
            RETURNING f.* INTO v_flow;
            IF v_rate_bound THEN
                v_wait := least(v_wait, flow_wait(v_flow.starts_at, v_flow.starts_n, v_now,
                                                  v_q.rate_limit, v_q.rate_period, 1));
            END IF;
        END IF;
        IF v_q.group_rate_limit IS NOT NULL THEN
            INSERT INTO group_flow AS gf (queue, group_key, starts_at, starts_n, last_at)
            SELECT v_q.name, g.key, ARRAY[v_now], ARRAY[count(*)::integer], v_now
              FROM unnest(v_groups) AS g(key)
             WHERE g.key IS NOT NULL AND g.key <> ''
             GROUP BY g.key
            ON CONFLICT (queue, group_key) DO UPDATE
               SET (starts_at, starts_n) = (SELECT a.p_at, a.p_n
                                              FROM flow_append(gf.starts_at, gf.starts_n,
                                                               v_now, v_q.group_rate_period,
                                                               EXCLUDED.starts_n[1]) AS a),
                   last_at = v_now;
            -- Groups this claim held to their rate: when the first may start again.
            v_wait := least(v_wait, (SELECT min(flow_wait(gf.starts_at, gf.starts_n, v_now,
                                                          v_q.group_rate_limit,
                                                          v_q.group_rate_period, 1))
                                       FROM group_flow AS gf
                                      WHERE gf.queue = v_q.name
                                        AND gf.group_key = ANY (v_cand.o_bound)));
        END IF;
        v_left := v_left - v_taken;
        v_start_left := greatest(v_start_left - v_taken, 0);
    END LOOP;

    IF v_more AND v_left > 0 THEN
        v_wait := 0;
    END IF;
    IF v_wait IS NOT NULL THEN
        RETURN QUERY SELECT NULL::boolean, NULL::bigint, NULL::text, NULL::text, NULL::jsonb,
                            NULL::integer, NULL::integer, NULL::text,
                            greatest(v_wait, 0)::double precision, NULL::boolean,
                            NULL::jsonb, NULL::timestamptz, NULL::integer,
                            NULL::timestamptz;
    END IF;
END
$$;

-- The leader's pass, about once a second: cancel expired jobs, refresh the depth estimate of
-- queues with max_depth, forget idle group rate logs and slots of queues no longer limited.
-- Returns the ids of the jobs it expired, and `busy`: whether anything needs these passes
-- (a queue with max_depth, a job that can expire, slots or rate logs); no row at all means
-- nothing does, and the leader comes back less often.
CREATE FUNCTION flow_maintain() RETURNS TABLE (expired bigint, busy boolean)
    LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT
AS $$
DECLARE
    v_busy boolean;
BEGIN
    v_busy := EXISTS (SELECT 1 FROM queues AS q WHERE q.max_depth IS NOT NULL)
              OR EXISTS (SELECT 1 FROM jobs AS j
                          WHERE j.expires_at IS NOT NULL
                            AND j.state IN ('scheduled', 'available', 'retrying'))
              OR EXISTS (SELECT 1 FROM flow_holders)
              OR EXISTS (SELECT 1 FROM group_flow);
    IF NOT v_busy THEN
        RETURN;
    END IF;
    UPDATE queues AS q
       SET depth_estimate = (SELECT count(*) FROM (
                                SELECT 1 FROM jobs AS j
                                 WHERE j.queue = q.name
                                   AND j.state IN ('scheduled', 'available', 'retrying')
                                 LIMIT q.max_depth + 1) AS s),
           depth_at = now()
     WHERE q.max_depth IS NOT NULL;
    DELETE FROM group_flow AS gf
     WHERE gf.last_at < now() - interval '1 hour'
       AND gf.last_at < now() - make_interval(secs => coalesce(
               (SELECT q.group_rate_period FROM queues AS q WHERE q.name = gf.queue), 0));
    DELETE FROM flow_holders AS h
     WHERE NOT EXISTS (SELECT 1 FROM jobs AS j WHERE j.id = h.job_id AND j.lease = h.lease);
    RETURN QUERY
    WITH due AS (
        SELECT j.id FROM jobs AS j
         WHERE j.expires_at <= now() AND j.expires_at IS NOT NULL
           AND j.state IN ('scheduled', 'available', 'retrying')
         ORDER BY j.expires_at
         LIMIT 1000
           FOR UPDATE SKIP LOCKED
    )
    UPDATE jobs AS j
       SET state = 'cancelled',
           finished_at = now(),
           errors = j.errors || jsonb_build_array(jsonb_build_object(
               'type', 'Expired',
               'message', 'expired: not started by ' || j.expires_at,
               'kind', 'expired',
               'attempt', j.attempt,
               'at', now()))
      FROM due
     WHERE j.id = due.id
    RETURNING j.id, true;
    IF NOT FOUND THEN
        RETURN QUERY SELECT NULL::bigint, true;
    END IF;
END
$$;

-- Back pressure: refuse `p_n` more jobs for a queue at its max_depth, with SQLSTATE PGQ01
-- (QueueFull; DETAIL is a JSON object with queue, depth and max_depth), so a trigger's
-- enqueue aborts the transaction that caused it. Far from the limit (an estimate under 80%
-- of max_depth, at most 2 s old) it trusts the leader's estimate and reads nothing else;
-- near it, it counts (at most max_depth + 1 index entries). Concurrent enqueuers near the
-- limit each count what is committed, so the depth can pass max_depth by at most the jobs
-- of the enqueue transactions open at the same moment (docs/flow-control.md). Internal:
-- the enqueue functions call it only for a queue whose row has a max_depth.
CREATE FUNCTION depth_check(p_queue text, p_n integer, p_max integer, p_estimate integer,
                            p_estimate_at timestamptz) RETURNS void
    LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_depth integer;
BEGIN
    IF p_estimate IS NOT NULL AND p_estimate_at > now() - interval '2 seconds'
       AND p_estimate + p_n <= p_max * 0.8 THEN
        RETURN;
    END IF;
    SELECT count(*) INTO v_depth
      FROM (SELECT 1 FROM jobs AS j
             WHERE j.queue = p_queue AND j.state IN ('scheduled', 'available', 'retrying')
             LIMIT p_max + 1) AS s;
    IF v_depth + p_n > p_max THEN
        PERFORM nextval('rejected_enqueues');
        RAISE EXCEPTION 'queue % is full: % waiting jobs, max_depth %', p_queue, v_depth, p_max
              USING ERRCODE = 'PGQ01',
                    DETAIL = json_build_object('queue', p_queue, 'depth', v_depth,
                                               'max_depth', p_max)::text,
                    HINT = 'retry later, or raise the limit: pgqueue queue '
                           || p_queue || ' --max-depth N';
    END IF;
END
$$;

-- The enqueue functions of 005 with group_key, expires_at and the depth check. The new
-- parameters come last with DEFAULT NULL, so every existing call (positional or named)
-- works unchanged; the old signatures are dropped first so no call is ambiguous.
DROP FUNCTION enqueue(text, jsonb, text, integer, timestamptz, text, integer);
DROP FUNCTION enqueue_job(text, jsonb, text, integer, timestamptz, text, integer,
                          double precision);
DROP FUNCTION enqueue_many(text, jsonb, text, integer, timestamptz, integer, double precision);

CREATE FUNCTION enqueue_job(
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
    LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT
AS $$
DECLARE
    v_id           bigint;
    v_queue        text;
    v_priority     integer;
    v_max_attempts integer;
    v_timeout      double precision;
    v_state        text := initial_state(p_run_at);
    v_max          integer;
    v_estimate     integer;
    v_estimate_at  timestamptz;
    v_grouped      boolean;
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
    -- Back pressure: one primary-key lookup; the check itself only for a queue with a limit.
    -- The same row says whether a job without a group joins the ungrouped group ('').
    SELECT q.max_depth, q.depth_estimate, q.depth_at,
           q.fair OR q.group_concurrency IS NOT NULL OR q.group_rate_limit IS NOT NULL
      INTO v_max, v_estimate, v_estimate_at, v_grouped
      FROM queues AS q WHERE q.name = v_queue;
    IF v_max IS NOT NULL THEN
        PERFORM depth_check(v_queue, 1, v_max, v_estimate, v_estimate_at);
    END IF;
    LOOP
        -- ON CONFLICT waits for a concurrent inserter of the same key to commit or roll back,
        -- so two racing enqueues can never both create a job.
        INSERT INTO jobs AS j (task, args, queue, priority, run_at, unique_key, max_attempts,
                               timeout, state, group_key, expires_at)
        VALUES (p_task, coalesce(p_args, '{}'), v_queue, coalesce(v_priority, 0),
                coalesce(p_run_at, now()), p_unique_key,
                coalesce(v_max_attempts, default_max_attempts()), v_timeout, v_state,
                coalesce(p_group_key, CASE WHEN v_grouped THEN '' END), p_expires_at)
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

CREATE FUNCTION enqueue_many(
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
    LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT
AS $$
DECLARE
    v_queue        text;
    v_priority     integer;
    v_max_attempts integer;
    v_timeout      double precision;
    v_state        text := initial_state(p_run_at);
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
    SELECT d.queue, d.priority, d.max_attempts, d.timeout
      INTO v_queue, v_priority, v_max_attempts, v_timeout
      FROM task_defaults(p_task, p_queue, p_priority, p_max_attempts, p_timeout) AS d;
    -- The whole chunk or none of it: checked against depth + its size before any insert.
    SELECT q.max_depth, q.depth_estimate, q.depth_at,
           q.fair OR q.group_concurrency IS NOT NULL OR q.group_rate_limit IS NOT NULL
      INTO v_max, v_estimate, v_estimate_at, v_grouped
      FROM queues AS q WHERE q.name = v_queue;
    IF v_max IS NOT NULL THEN
        PERFORM depth_check(v_queue, jsonb_array_length(p_args), v_max, v_estimate,
                            v_estimate_at);
    END IF;

    RETURN QUERY
    INSERT INTO jobs AS j (task, args, queue, priority, run_at, max_attempts, timeout, state,
                           group_key, expires_at)
    SELECT p_task, a.args, v_queue, coalesce(v_priority, 0), coalesce(p_run_at, now()),
           coalesce(v_max_attempts, default_max_attempts()), v_timeout, v_state,
           coalesce(p_group_key, CASE WHEN v_grouped THEN '' END), p_expires_at
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

-- The public entry point (DESIGN.md section 3), with group_key and expires_at.
CREATE FUNCTION enqueue(
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
    LANGUAGE sql VOLATILE SET search_path FROM CURRENT
AS $$
    SELECT e.id FROM enqueue_job(task, args, queue, priority, run_at, unique_key,
                                 max_attempts, NULL, group_key, expires_at) AS e
$$;


-- Each limit with its use now: one row per queue with settings (group_key NULL), and one per
-- busy group (slots held, or starts in its rate log). `running` counts held slots, `starts`
-- the starts in the current rate window and `tokens` the starts still permitted in it,
-- `waiting` the jobs not yet started.
CREATE VIEW queue_limits AS
WITH held AS (
    SELECT h.queue, h.group_key
      FROM flow_holders AS h
      JOIN jobs AS j ON j.id = h.job_id AND j.lease = h.lease
)
SELECT q.name AS queue,
       NULL::text AS group_key,
       q.concurrency,
       (SELECT count(*) FROM held WHERE held.queue = q.name)::integer AS running,
       format_rate(q.rate_limit, q.rate_period) AS rate,
       CASE WHEN q.rate_limit IS NOT NULL
            THEN flow_used(f.starts_at, f.starts_n,
                           now() - make_interval(secs => q.rate_period)) END AS starts,
       CASE WHEN q.rate_limit IS NOT NULL
            THEN greatest(q.rate_limit - flow_used(f.starts_at, f.starts_n,
                          now() - make_interval(secs => q.rate_period)), 0) END AS tokens,
       (SELECT count(*) FROM jobs AS j
         WHERE j.queue = q.name AND j.state IN ('scheduled', 'available', 'retrying'))::integer
           AS waiting,
       q.fair,
       q.max_depth,
       q.paused
  FROM queues AS q
  LEFT JOIN queue_flow AS f ON f.queue = q.name
 WHERE q.limited OR q.max_depth IS NOT NULL OR q.paused
UNION ALL
SELECT q.name,
       g.group_key,
       q.group_concurrency,
       (SELECT count(*) FROM held
         WHERE held.queue = q.name AND held.group_key = g.group_key)::integer,
       format_rate(q.group_rate_limit, q.group_rate_period),
       CASE WHEN q.group_rate_limit IS NOT NULL
            THEN flow_used(gf.starts_at, gf.starts_n,
                           now() - make_interval(secs => q.group_rate_period)) END,
       CASE WHEN q.group_rate_limit IS NOT NULL
            THEN greatest(q.group_rate_limit - flow_used(gf.starts_at, gf.starts_n,
                          now() - make_interval(secs => q.group_rate_period)), 0) END,
       (SELECT count(*) FROM jobs AS j
         WHERE j.queue = q.name AND j.group_key = g.group_key
           AND j.state IN ('scheduled', 'available', 'retrying'))::integer,
       q.fair,
       NULL::integer,
       q.paused
  FROM queues AS q
  JOIN (SELECT held.queue, held.group_key FROM held
         WHERE held.group_key IS NOT NULL AND held.group_key <> ''
        UNION
        SELECT gf2.queue, gf2.group_key FROM group_flow AS gf2
       ) AS g
    ON g.queue = q.name
  LEFT JOIN group_flow AS gf ON gf.queue = q.name AND gf.group_key = g.group_key
 WHERE q.group_concurrency IS NOT NULL OR q.group_rate_limit IS NOT NULL;
