-- Concurrency slots kept in the queue's own queue_flow row (issue 17), where 012 kept one
-- flow_holders row per claimed job.
--
-- Why: every limited claim deleted the rows of the slots freed since the last one and
-- inserted one per job it took, so a drain left a dead index entry per job it had run in
-- flow_holders_queue_idx, and each claim's "which slots are held" read (a bitmap scan,
-- which never marks index entries dead) visited all of them: 17,450 entries for 50 live
-- slots near the end of a 20,000-job drain, over 2 ms of a claim that holds the queue's
-- lock. The slots are now three parallel arrays in the queue_flow row that every claim
-- locks anyway (job id, the lease that took it, its group), rewritten by the claim in one
-- update of columns no index covers: a HOT update, no index entry, nothing for a later
-- claim to walk past. What a slot is does not change (012's header): it is held exactly as
-- long as its job still carries that lease, and a claim drops the others before counting.
-- The arrays are only read or written under the row's lock, by statements whose snapshot
-- is taken after it, so no claim can miss another's slots.
ALTER TABLE queue_flow
    ADD COLUMN held_ids    bigint[] NOT NULL DEFAULT '{}',
    ADD COLUMN held_leases uuid[] NOT NULL DEFAULT '{}',
    ADD COLUMN held_groups text[] NOT NULL DEFAULT '{}';

-- Slots held now move into their queue's row.
INSERT INTO queue_flow (queue) SELECT DISTINCT h.queue FROM flow_holders AS h
ON CONFLICT DO NOTHING;
UPDATE queue_flow AS f
   SET (held_ids, held_leases, held_groups) = (
           SELECT coalesce(array_agg(h.job_id ORDER BY h.job_id), '{}'),
                  coalesce(array_agg(h.lease ORDER BY h.job_id), '{}'),
                  coalesce(array_agg(h.group_key ORDER BY h.job_id), '{}')
             FROM flow_holders AS h
             JOIN jobs AS j ON j.id = h.job_id AND j.lease = h.lease
            WHERE h.queue = f.queue);

DROP VIEW queue_limits;
DROP TABLE flow_holders;

-- The slots of a queue_flow row whose job still carries the lease that took them. Read
-- under the row's lock (see the top of this file). Internal.
CREATE FUNCTION flow_held(p_ids bigint[], p_leases uuid[], p_groups text[],
                          OUT o_ids bigint[], OUT o_leases uuid[], OUT o_groups text[])
    LANGUAGE sql STABLE
AS $$
    SELECT coalesce(array_agg(h.id ORDER BY h.ord), '{}'),
           coalesce(array_agg(h.lease ORDER BY h.ord), '{}'),
           coalesce(array_agg(h.grp ORDER BY h.ord), '{}')
      FROM unnest(p_ids, p_leases, p_groups) WITH ORDINALITY AS h(id, lease, grp, ord)
     WHERE EXISTS (SELECT 1 FROM jobs AS j WHERE j.id = h.id AND j.lease = h.lease)
$$;

-- Set a queue's settings from psql, a migration or a trigger; the Python API calls it too.
-- `p_settings` is a JSON object: a key present sets that setting (JSON null removes it), a
-- key absent leaves it as it is. Keys: concurrency, rate, group_concurrency, group_rate,
-- fair, max_depth. Returns the queue's settings after the change.
--   SELECT * FROM pgqueue.configure_queue('exports', '{"concurrency": 5, "rate": "20/s"}');
CREATE OR REPLACE FUNCTION configure_queue(p_queue text, p_settings jsonb DEFAULT '{}')
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
    -- until they leave `running`, as if the limited claim had taken them. Every slot held
    -- now is such a job, so the queue's slots become exactly its running jobs: read after
    -- the row's lock (a fresh snapshot), so a claim that committed meanwhile is seen.
    IF v_row.concurrency IS NOT NULL OR v_row.group_concurrency IS NOT NULL THEN
        INSERT INTO queue_flow AS f (queue) VALUES (p_queue) ON CONFLICT DO NOTHING;
        PERFORM 1 FROM queue_flow AS f WHERE f.queue = p_queue FOR UPDATE;
        UPDATE queue_flow AS f
           SET (held_ids, held_leases, held_groups) = (
                   SELECT coalesce(array_agg(j.id ORDER BY j.id), '{}'),
                          coalesce(array_agg(j.lease ORDER BY j.id), '{}'),
                          coalesce(array_agg(j.group_key ORDER BY j.id), '{}')
                     FROM jobs AS j
                    WHERE j.state = 'running' AND j.queue = p_queue
                      AND j.lease IS NOT NULL)
         WHERE f.queue = p_queue;
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
-- `p_held`: the group of each slot the queue holds now (group_concurrency counts them).
DROP FUNCTION flow_candidates(text, integer, boolean, integer, integer, double precision,
                              timestamptz, boolean, integer, text, timestamptz);
CREATE FUNCTION flow_candidates(
    p_queue text, p_cap integer, p_fair boolean,
    p_gconc integer, p_grate integer, p_gperiod double precision,
    p_now timestamptz, p_suspects boolean, p_quarantine integer, p_held text[],
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
                SELECT count(*) INTO v_used FROM unnest(p_held) AS h(grp) WHERE h.grp = v_g;
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
CREATE OR REPLACE FUNCTION claim_limited(
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
    v_hids    bigint[];
    v_hleases uuid[];
    v_hgroups text[];
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
            -- Slots whose job no longer carries the lease that took them are free again
            -- (read after the lock: see the top of this file).
            SELECT h.o_ids, h.o_leases, h.o_groups INTO v_hids, v_hleases, v_hgroups
              FROM flow_held(v_flow.held_ids, v_flow.held_leases, v_flow.held_groups) AS h;
        END IF;
        -- What the queue-wide limits allow, and the wait they would impose if they, not
        -- the backlog, stop this claim (known once the claim is made: below).
        v_conc_bound := false;
        v_rate_bound := false;
        IF v_q.concurrency IS NOT NULL THEN
            v_used := cardinality(v_hids);
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
            -- In claim order, so the plan reads jobs_claim_queue_idx: an EXISTS is planned
            -- as a sequential scan when the queue holds every job (n_distinct of `queue`
            -- is 1), which read past every finished job first (6 ms at 20,000 jobs).
            PERFORM 1 FROM jobs AS j
             WHERE j.queue = v_q.name
               AND j.state IN ('scheduled', 'available', 'retrying')
               AND j.run_at <= now()
             ORDER BY j.priority DESC, j.run_at, j.id
             LIMIT 1;
            IF FOUND THEN
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
                                   p_suspects, p_quarantine,
                                   v_hgroups,
                                   v_flow.group_cursor,
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
            -- The slots still held plus one per job taken: one HOT update of the locked row.
            UPDATE queue_flow AS f
               SET (held_ids, held_leases, held_groups) = (
                       SELECT v_hids || coalesce(array_agg(c.id), '{}'),
                              v_hleases || coalesce(array_agg(c.lease), '{}'),
                              v_hgroups || coalesce(array_agg(c.group_key), '{}')
                         FROM claimed AS c)
             WHERE f.queue = v_q.name AND v_holds
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
CREATE OR REPLACE FUNCTION flow_maintain() RETURNS TABLE (expired bigint, busy boolean)
    LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT
AS $$
DECLARE
    v_busy  boolean;
    v_queue text;
BEGIN
    v_busy := EXISTS (SELECT 1 FROM queues AS q WHERE q.max_depth IS NOT NULL)
              OR EXISTS (SELECT 1 FROM jobs AS j
                          WHERE j.expires_at IS NOT NULL
                            AND j.state IN ('scheduled', 'available', 'retrying'))
              OR EXISTS (SELECT 1 FROM queue_flow AS f WHERE cardinality(f.held_ids) > 0)
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
    -- Slots whose job has moved on, of queues no claim visits (no worker, or no limit now):
    -- each row locked first, then pruned by a statement that sees every claim before the
    -- lock (see the top of 014). A row a claim holds is skipped: that claim prunes it.
    FOR v_queue IN SELECT f.queue FROM queue_flow AS f
                    WHERE cardinality(f.held_ids) > 0
                    ORDER BY f.queue
                      FOR UPDATE SKIP LOCKED LOOP
        UPDATE queue_flow AS f
           SET (held_ids, held_leases, held_groups) = (
                   SELECT h.o_ids, h.o_leases, h.o_groups
                     FROM flow_held(f.held_ids, f.held_leases, f.held_groups) AS h
                    WHERE EXISTS (SELECT 1 FROM queues AS q
                                   WHERE q.name = f.queue
                                     AND (q.concurrency IS NOT NULL
                                          OR q.group_concurrency IS NOT NULL))
                   UNION ALL
                   SELECT '{}', '{}', '{}'
                    WHERE NOT EXISTS (SELECT 1 FROM queues AS q
                                       WHERE q.name = f.queue
                                         AND (q.concurrency IS NOT NULL
                                              OR q.group_concurrency IS NOT NULL)))
         WHERE f.queue = v_queue;
    END LOOP;
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


-- queue_limits as in 012, its slots read from queue_flow.
-- Each limit with its use now: one row per queue with settings (group_key NULL), and one per
-- busy group (slots held, or starts in its rate log). `running` counts held slots, `starts`
-- the starts in the current rate window and `tokens` the starts still permitted in it,
-- `waiting` the jobs not yet started.
CREATE VIEW queue_limits AS
WITH held AS (
    SELECT f.queue, h.group_key
      FROM queue_flow AS f
     CROSS JOIN LATERAL unnest(f.held_ids, f.held_leases, f.held_groups)
                        AS h(job_id, lease, group_key)
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
