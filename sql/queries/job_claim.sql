-- Claim up to `limit` due jobs for one worker, and record the worker's successes.
--
-- Rendered in variants (see _VARIANTS in pgqueue/_db/queries.py): for every queue, one queue
-- or a list of queues; for ordinary or suspect jobs; from the front or after a cursor. The
-- filters are literal SQL rather than parameters so that a generic plan still sees which
-- partial index matches: jobs_claim_idx for every queue in priority order,
-- jobs_claim_queue_idx for a list of queues (without it a small queue's claim would walk past
-- a big queue's backlog), jobs_suspect_idx for suspects.
--
-- The `_after` variants continue from where this worker's previous claim ended (its last
-- row in claim order): the rows before it were claimed, and while an old snapshot pins the
-- xmin horizon (a long transaction anywhere in the cluster) their dead index entries cannot
-- be cleaned up, so a claim that starts from the front of the index visits every one of
-- them. Measured: serial claims fell from 2,200 to 360 jobs/s within 40,000 jobs; a
-- continuing claim read 19 buffers where the full one read 1,230. The worker starts from the
-- front again at least every second and whenever the continuation runs dry, so a job that
-- sorts earlier (a higher priority, a scheduled job come due) waits at most that long.
--
-- Suspects are jobs that were running when their worker died twice (rescue_count >= 2, see
-- QUARANTINE_AFTER in pgqueue/_db/queries.py): an idle worker claims one at a time and runs
-- nothing else meanwhile, so a job that kills its process cannot keep taking innocent jobs
-- down with it. A job rescued once is claimed like any other, so one crash never stalls the
-- surviving workers behind the dead one's jobs.
--
-- The candidates CTE is MATERIALIZED so the LIMIT is applied exactly once (inlined, the
-- planner may re-run it and lock more than asked); the UPDATE then finds the rows by primary
-- key through an array, so no plan can turn it into a scan of the table. SKIP LOCKED lets
-- concurrent workers take disjoint rows without waiting. Each claim gets a fresh lease:
-- every later change to the row must present it.
--
-- The same statement records the successes waiting in the worker's buffer (the arrays may be
-- empty; the completer sends them with a limit of 0): one round trip and one commit instead
-- of two. Their ids and leases come as array literals and their results as one JSON array
-- (element n-1 for the n-th id): the worker builds each with one string join, where
-- adapting Python lists element by element cost more than running the jobs. The lease guard
-- makes a stale worker's late completion (its job was rescued and claimed again) a no-op.
-- Both updates see one snapshot and touch disjoint rows: completed rows are `running`,
-- candidates are not.
--
-- A claim that records no outcome (`ids` empty) commits asynchronously: the worker does not
-- wait for the WAL flush, which was a third of an idle worker's pickup time. What a server
-- crash can lose is then only a claim, and a lost claim leaves the row as it was before,
-- `available` with the attempt unspent: the job runs again (at-least-once), and the worker's
-- outcome for the lost claim matches no lease, so it changes nothing. A statement that
-- records outcomes keeps the session's setting: a caller told that a job finished must never
-- see it run again. Its synchronous commit also flushes every earlier claim, so no outcome
-- is durable while the claim it belongs to is not.
WITH done AS (
    UPDATE {schema}.jobs AS j
       SET state = 'completed',
           lease = NULL,
           result = %(results)s::jsonb -> (c.n::integer - 1),
           finished_at = now(),
           -- A job that started from the buffer has its start recorded here, with its
           -- outcome: `began` holds its seconds since the start (NULL when the claim or a
           -- start report recorded it; the array may be shorter than `ids`, unnest pads it).
           attempt = j.attempt + (j.started_at IS NULL)::integer,
           started_at = coalesce(j.started_at, now() - make_interval(secs => c.began), now())
      FROM unnest(%(ids)s::bigint[], %(leases)s::uuid[], %(began)s::double precision[])
           WITH ORDINALITY AS c(id, lease, began, n)
     WHERE j.id = c.id
       -- The guard. A lease exists only while its claim runs (every way out of `running`
       -- clears it), so a match means the row is still running under this very claim. The
       -- state is deliberately not tested as well: that test would let the planner read
       -- jobs_running_idx end to end, and while a long transaction pins the xmin horizon
       -- that index keeps an entry for every job claimed since, where the primary key
       -- finds each row directly.
       AND j.lease = c.lease
    RETURNING j.id
),
candidates AS MATERIALIZED (
    SELECT id, priority, run_at
      FROM {schema}.jobs
     WHERE state IN ('scheduled', 'available', 'retrying')
       AND run_at <= now()
       AND {queue_filter}
       AND {suspect_filter}
       AND {cursor_filter}
       -- A job past its expiry is never started (the leader cancels it as expired).
       AND (expires_at IS NULL OR expires_at > now())
       -- Paused queues, and queues with limits (claimed only by claim_limited, 012):
       -- checked in the claim itself, so a pause or a limit takes effect in every worker
       -- process at its next claim. Never as a join (_QUEUE_FILTERS in
       -- pgqueue/_db/queries.py says why).
       AND {blocked_filter}
     ORDER BY {claim_order}
     LIMIT %(limit)s::integer
       FOR UPDATE SKIP LOCKED
),
-- Claimed is not started: only the first `start` rows in claim order take a free slot at
-- once, and only they get started_at and spend their attempt now. The rest wait in the
-- worker's buffer, started_at NULL (shown as `claimed`), attempt unspent: their start is
-- recorded when it happens (see `done` above and job_start_many.sql), so a kill -9 charges
-- them nothing. A job rescued before, or one whose dead worker may have started it without
-- recording so (maybe_started), has its start recorded at claim whatever its place, so a
-- job that kills its worker is always charged for it.
starting AS (
    SELECT ARRAY(SELECT id FROM candidates ORDER BY priority DESC, run_at, id
                  LIMIT %(start)s::integer) AS ids
),
claimed AS (
    UPDATE {schema}.jobs AS j
       SET state = 'running',
           attempt = j.attempt + (j.id = ANY ((SELECT ids FROM starting)::bigint[])
                                  OR j.maybe_started OR j.rescue_count > 0)::integer,
           lease = gen_random_uuid(),
           worker_id = %(worker_id)s::uuid,
           cancel_requested = false,
           maybe_started = false,
           started_at = CASE WHEN j.id = ANY ((SELECT ids FROM starting)::bigint[])
                                  OR j.maybe_started OR j.rescue_count > 0 THEN now() END
     WHERE j.id = ANY (ARRAY(SELECT id FROM candidates))
    -- `attempt` is the attempt the run will be, whether it starts now or from the buffer.
    RETURNING j.id, j.task, j.queue, j.args, j.attempt + (j.started_at IS NULL)::integer
              AS attempt, j.max_attempts, j.lease::text AS lease, j.timeout,
              j.started_at IS NOT NULL AS started, j.trace, j.scheduled_for, j.priority, j.run_at
),
-- Read at COMMIT, so a transaction-local setting made during the statement decides how this
-- one commits. Scanned (and so evaluated) whenever a row was claimed; with nothing claimed
-- and nothing recorded the transaction writes nothing and has no flush to wait for.
commit_mode AS (
    SELECT set_config('synchronous_commit',
                      CASE WHEN cardinality(%(ids)s::bigint[]) = 0 THEN 'off'
                           ELSE current_setting('synchronous_commit') END,
                      true)
)
-- Claimed jobs first (true), then the ids of accepted completions (false), each of which
-- wakes `job.wait()` callers (notifications are folded per transaction by PostgreSQL).
--
-- The claimed jobs come back in claim order (priority DESC, run_at, id), because the worker
-- starts them in the order they arrive: higher priority first, FIFO within a priority, also
-- inside one batch. UPDATE ... RETURNING yields rows in the order the update happened to
-- visit them (by id through the primary key, or physical order), not the candidates' order,
-- and only an ORDER BY on the statement itself guarantees an order. Sorting a batch (at
-- most `limit` rows plus the recorded ids) costs about 15 us for 20 rows, against hundreds
-- for the statement; a drain showed no difference. Priority and run_at are the claimed rows'
-- own values, which the claim does not change.
--
-- `started` says whether the claim recorded the start; `trace` is the enqueuer's trace
-- context, NULL unless one was recorded; `scheduled_for` the slot of a schedule's job.
SELECT true AS claimed, claimed.*
  FROM claimed CROSS JOIN commit_mode
UNION ALL
SELECT false, id, NULL::text, NULL::text, NULL::jsonb, NULL::integer, NULL::integer,
       NULL::text, NULL::double precision, NULL::boolean, NULL::jsonb, NULL::timestamptz,
       NULL::integer, NULL::timestamptz
  FROM done, LATERAL (SELECT pg_notify(%(done_channel)s, '')) AS wake
 ORDER BY claimed DESC, priority DESC, run_at, id
