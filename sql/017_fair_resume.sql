-- The fair (and grouped) claim resumes where the previous one stopped (issue 17).
--
-- Why: a claimed job's entries in the claim indexes stay until VACUUM (its new row version
-- is not in these partial indexes, the old one is dead), and every seek that looks for the
-- first waiting job of a group or of a queue steps over the entries of all the jobs already
-- claimed before it. 016's fair claim did so up to four times per claim: the priority level
-- (through jobs_claim_idx, past every queue's claimed jobs), the group walk's wrap to the
-- front (past the first group's), and each group's jobs, found by its key and then read
-- again from the group's start. With one hot group 80,000 jobs into a drain, those were
-- 555 buffers each, two thirds of the claim's reads outside its writes.
--
-- Now: the walk notes where each group's first waiting job is and reads the group's jobs
-- from there; the level is read from jobs_claim_queue_idx, and while the previous claim's
-- position is fresh only the levels above it are looked at (none, mostly); and the
-- position of the last job the previous claim took from its cursor group is kept in the
-- queue's row, so a walk that wraps round to that group resumes there. The position is a
-- lower bound of that group's waiting jobs except for a job that reappears before it (a
-- released claim), so it is trusted for a second at a time: then one claim walks from the
-- front, and such a job waits at most that long (as the plain claim's continuation,
-- job_claim.sql). What a claim takes, and in which order, does not change.
ALTER TABLE queue_flow
    ADD COLUMN resume_priority integer,
    ADD COLUMN resume_group    text,
    ADD COLUMN resume_run_at   timestamptz,
    ADD COLUMN resume_id       bigint,
    -- When a claim last walked from the front (the position unused).
    ADD COLUMN front_at        timestamptz;

-- As 016's, and: `p_resume_*` (in and out) the position in jobs_claim_group_idx of the last
-- job a claim took from group `p_resume_group`, `p_front_at` (in and out) when a claim last
-- walked without it. Internal (caller's path).
DROP FUNCTION flow_candidates(text, integer, boolean, integer, integer, double precision,
                              timestamptz, boolean, integer, text[], text, timestamptz);
CREATE FUNCTION flow_candidates(
    p_queue text, p_cap integer, p_fair boolean,
    p_gconc integer, p_grate integer, p_gperiod double precision,
    p_now timestamptz, p_suspects boolean, p_quarantine integer, p_held text[],
    INOUT p_cursor text, INOUT p_ungrouped_none_at timestamptz,
    INOUT p_resume_priority integer, INOUT p_resume_group text,
    INOUT p_resume_run_at timestamptz, INOUT p_resume_id bigint, INOUT p_front_at timestamptz,
    OUT o_ids bigint[], OUT o_groups text[], OUT o_wait double precision,
    OUT o_more boolean, OUT o_bound text[])
    LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_level     integer;
    v_levels    integer := 0;
    v_need      integer := p_cap;
    v_g         text;
    v_r         timestamptz;
    v_i         bigint;
    v_start     text;
    v_wrapped   boolean;
    v_passed    boolean;
    v_look      boolean;
    v_visits    integer;
    v_keys      text[];
    v_allow     integer[];
    v_from_r    timestamptz[];
    v_from_i    bigint[];
    v_a         integer;
    v_used      integer;
    v_log       record;
    v_null_head boolean;
    v_ids       bigint[];
    v_grp       text[];
    v_run       timestamptz[];
    v_share     integer;
    v_cut       boolean;
    v_resume    boolean;
    v_here      boolean;
    v_guess     boolean;
BEGIN
    o_ids := '{}';
    o_groups := '{}';
    o_bound := '{}';
    o_more := false;
    -- A suspect probe walks from the front and leaves the position alone (it takes
    -- suspects only, so what it takes says nothing of the jobs before them).
    v_resume := NOT p_suspects AND p_resume_id IS NOT NULL
                AND p_front_at > p_now - interval '1 second';
    IF NOT v_resume AND NOT p_suspects THEN
        p_front_at := p_now;
    END IF;
    LOOP
        EXIT WHEN v_need <= 0 OR v_levels >= 4;
        -- The next priority level that has waiting jobs: one seek in jobs_claim_queue_idx
        -- (the array of one keeps the queue out of the planner's equivalence classes, so
        -- only that index yields the order; jobs_claim_idx would read every queue's claimed
        -- jobs first). With a fresh position, only the levels above its own.
        IF v_levels = 0 AND v_resume THEN
            SELECT j.priority INTO v_level
              FROM jobs AS j
             WHERE j.queue = ANY (ARRAY[p_queue])
               AND j.state IN ('scheduled', 'available', 'retrying')
               AND j.priority > p_resume_priority
             ORDER BY j.queue, j.priority DESC
             LIMIT 1;
            IF NOT FOUND THEN
                v_level := p_resume_priority;
            END IF;
        ELSIF v_levels = 0 THEN
            SELECT j.priority INTO v_level
              FROM jobs AS j
             WHERE j.queue = ANY (ARRAY[p_queue])
               AND j.state IN ('scheduled', 'available', 'retrying')
             ORDER BY j.queue, j.priority DESC
             LIMIT 1;
            EXIT WHEN NOT FOUND;
        ELSE
            SELECT j.priority INTO v_level
              FROM jobs AS j
             WHERE j.queue = ANY (ARRAY[p_queue])
               AND j.state IN ('scheduled', 'available', 'retrying')
               AND j.priority < v_level
             ORDER BY j.queue, j.priority DESC
             LIMIT 1;
            EXIT WHEN NOT FOUND;
        END IF;
        v_levels := v_levels + 1;
        v_guess := v_levels = 1 AND v_resume;

        -- Walk the groups of this level after the cursor, wrapping once. Each seek notes the
        -- group's first waiting job, where its jobs are read from below. Wrapped round to
        -- the group of the position (the cursor group, mostly), the walk resumes that group
        -- from the position instead of stepping over its claimed jobs from the front.
        v_here := v_resume AND v_level = p_resume_priority AND p_cursor = p_resume_group;
        v_keys := '{}';
        v_allow := '{}';
        v_from_r := '{}';
        v_from_i := '{}';
        v_start := p_cursor;
        v_g := p_cursor;
        v_wrapped := p_cursor IS NULL;
        v_passed := p_cursor IS NULL;
        v_visits := 0;
        LOOP
            EXIT WHEN cardinality(v_keys) >= v_need OR v_visits >= greatest(4 * p_cap, 64);
            IF v_wrapped AND v_here THEN
                -- The groups before the cursor group, then the cursor group itself.
                IF v_g IS NULL THEN
                    SELECT j.group_key, j.run_at, j.id INTO v_g, v_r, v_i
                      FROM jobs AS j
                     WHERE j.queue = p_queue AND j.priority = v_level
                       AND j.group_key IS NOT NULL
                       AND j.state IN ('scheduled', 'available', 'retrying')
                       AND j.group_key < v_start
                     ORDER BY j.group_key, j.run_at, j.id
                     LIMIT 1;
                ELSE
                    SELECT j.group_key, j.run_at, j.id INTO v_g, v_r, v_i
                      FROM jobs AS j
                     WHERE j.queue = p_queue AND j.priority = v_level
                       AND j.group_key IS NOT NULL
                       AND j.state IN ('scheduled', 'available', 'retrying')
                       AND j.group_key > v_g AND j.group_key < v_start
                     ORDER BY j.group_key, j.run_at, j.id
                     LIMIT 1;
                END IF;
                IF NOT FOUND THEN
                    SELECT j.group_key, j.run_at, j.id INTO v_g, v_r, v_i
                      FROM jobs AS j
                     WHERE j.queue = p_queue AND j.priority = v_level
                       AND j.group_key = v_start
                       AND j.state IN ('scheduled', 'available', 'retrying')
                       AND (j.run_at, j.id) > (p_resume_run_at, p_resume_id)
                     ORDER BY j.run_at, j.id
                     LIMIT 1;
                    EXIT WHEN NOT FOUND;  -- every other group was visited: the rotation is done
                END IF;
            ELSE
                IF v_g IS NULL THEN  -- from the start: the ungrouped group ('') first
                    SELECT j.group_key, j.run_at, j.id INTO v_g, v_r, v_i
                      FROM jobs AS j
                     WHERE j.queue = p_queue AND j.priority = v_level
                       AND j.group_key IS NOT NULL
                       AND j.state IN ('scheduled', 'available', 'retrying')
                     ORDER BY j.group_key, j.run_at, j.id
                     LIMIT 1;
                ELSE
                    SELECT j.group_key, j.run_at, j.id INTO v_g, v_r, v_i
                      FROM jobs AS j
                     WHERE j.queue = p_queue AND j.priority = v_level
                       AND j.group_key IS NOT NULL
                       AND j.state IN ('scheduled', 'available', 'retrying')
                       AND j.group_key > v_g
                     ORDER BY j.group_key, j.run_at, j.id
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
            END IF;
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
                v_from_r := v_from_r || v_r;
                v_from_i := v_from_i || v_i;
            END IF;
            p_cursor := v_g;
            -- Back at the group it started after: the rotation is done (the next seek could
            -- only find a group visited already).
            EXIT WHEN v_wrapped AND v_g = v_start;
        END LOOP;

        -- The position's level taken on trust, and no group in it to visit: it may have
        -- run dry, so the levels are read from the top after all (rare: once a level ends).
        IF v_guess AND cardinality(v_keys) = 0 THEN
            v_resume := false;
            v_levels := 0;
            p_front_at := p_now;
            CONTINUE;
        END IF;

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
        -- Each group's jobs are read from its first waiting job, as the walk found it.
        SELECT coalesce(array_agg(c.id ORDER BY CASE WHEN p_fair THEN c.rn END, c.pos,
                                                c.run_at, c.id), '{}'),
               coalesce(array_agg(c.group_key ORDER BY CASE WHEN p_fair THEN c.rn END, c.pos,
                                                       c.run_at, c.id), '{}'),
               coalesce(array_agg(c.run_at ORDER BY CASE WHEN p_fair THEN c.rn END, c.pos,
                                                    c.run_at, c.id), '{}'),
               coalesce(bool_or(c.rn = v_share AND c.allow > v_share), false)
          INTO v_ids, v_grp, v_run, v_cut
          FROM (SELECT h.id, h.group_key, h.run_at, h.rn,
                       CASE WHEN p_fair THEN g.pos ELSE 0 END AS pos, g.allow
                  FROM unnest(v_keys, v_allow, v_from_r, v_from_i) WITH ORDINALITY
                       AS g(key, allow, from_r, from_i, pos)
                 CROSS JOIN LATERAL (
                       SELECT j.id, j.group_key, j.run_at,
                              row_number() OVER (ORDER BY j.run_at, j.id) AS rn
                         FROM jobs AS j
                        WHERE j.queue = p_queue AND j.priority = v_level
                          AND j.group_key = g.key
                          AND (j.run_at, j.id) >= (g.from_r, g.from_i)
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
            v_run := v_run[1:v_need];
        END IF;
        -- The position for the next claim: the last job taken from the cursor group. Kept
        -- as it was if nothing was taken from that group since (still a lower bound).
        IF NOT p_suspects AND p_cursor IS NOT NULL THEN
            SELECT x.r, x.i INTO v_r, v_i
              FROM unnest(v_ids, v_grp, v_run) AS x(i, g, r)
             WHERE x.g = p_cursor
             ORDER BY x.r DESC, x.i DESC
             LIMIT 1;
            IF FOUND THEN
                p_resume_priority := v_level;
                p_resume_group := p_cursor;
                p_resume_run_at := v_r;
                p_resume_id := v_i;
            ELSIF p_resume_group IS DISTINCT FROM p_cursor
                  OR p_resume_priority IS DISTINCT FROM v_level THEN
                p_resume_priority := NULL;
                p_resume_group := NULL;
                p_resume_run_at := NULL;
                p_resume_id := NULL;
            END IF;
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
-- As 016's, but for a fair or grouped queue's position, passed to flow_candidates and kept
-- as it returns it (in the same update of the locked queue_flow row as the cursor).
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
                                   v_flow.ungrouped_none_at,
                                   v_flow.resume_priority, v_flow.resume_group,
                                   v_flow.resume_run_at, v_flow.resume_id, v_flow.front_at);
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
                   ungrouped_none_at = v_cand.p_ungrouped_none_at,
                   resume_priority = v_cand.p_resume_priority,
                   resume_group = v_cand.p_resume_group,
                   resume_run_at = v_cand.p_resume_run_at,
                   resume_id = v_cand.p_resume_id,
                   front_at = v_cand.p_front_at
             WHERE f.queue = v_q.name
               AND (f.group_cursor IS DISTINCT FROM v_cand.p_cursor
                    OR f.ungrouped_none_at IS DISTINCT FROM v_cand.p_ungrouped_none_at
                    OR f.resume_id IS DISTINCT FROM v_cand.p_resume_id
                    OR f.resume_group IS DISTINCT FROM v_cand.p_resume_group
                    OR f.front_at IS DISTINCT FROM v_cand.p_front_at);
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
