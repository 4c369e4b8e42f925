-- Settling dependents once per statement instead of once per row (see 008_workflows.sql for
-- what settling means).
--
-- 008's trigger ran for each job that ended, so a fan-in of 1,000 children updated its
-- parent's counter 1,000 times: a new row version of one hot row per child, and a lock on
-- it that every completing transaction queued for. Its update also found the parent through
-- a join whose generic plan could walk the primary key past every finished child (a merge
-- join on jobs.id), so each child cost more than the last: measured 0.6 ms per child with
-- 1,000 finished siblings. This trigger runs once per statement, reads what the statement
-- changed from its transition tables, and gives each dependent one update per statement that
-- subtracts the number of its dependencies the statement settled. A worker completes its
-- jobs in batches, so a fan-in's parent now sees one update per batch.
--
-- It fires for every UPDATE of jobs (a trigger with transition tables cannot name columns,
-- and a statement-level trigger has no WHEN clause): a statement that touches no workflow job
-- pays the capture of its rows into the transition tables and one scan of them that finds no
-- `in_workflow` row. Measured with the plain drain in benchmarks/README.md.
--
-- Races are settled as before, by row locks: an edge's insert locks the job it names, and the
-- counters go down through UPDATEs, which re-read a dependent's latest version after waiting
-- for its lock (READ COMMITTED), so two statements in different transactions that settle
-- children of one parent subtract both counts, in turn. Each query in the function takes a
-- fresh snapshot, so it sees edges committed while the statement waited. When one statement
-- settles dependencies of several jobs, it locks them in id order first, so two such
-- statements cannot deadlock on each other's dependents.
--
-- Within one statement the decrement comes first, then the cancellations: an `after`
-- dependent of a completed job and a failed one, both ending in one statement, has the
-- completed one subtracted before it is cancelled, so a retry of the failed one revives it
-- with a count that is right.

DROP TRIGGER jobs_settle_dependents ON jobs;

CREATE OR REPLACE FUNCTION job_settle_dependents() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT
AS $$
DECLARE
    -- Workflow jobs whose state this statement changed: those that ended (and of them, those
    -- that completed, failed or were cancelled, and were cancelled), and those put back in
    -- line after a failure or a cancel (revived).
    ended_ids     bigint[];
    done_ids      bigint[];
    broken_ids    bigint[];
    cancelled_ids bigint[];
    revived_ids   bigint[];
    dependents    bigint[];   -- the jobs waiting for them, in id order
    settled       integer[];  -- how many of each one's dependencies ended here
    woken_queues  integer;
BEGIN
    SELECT array_agg(n.id) FILTER (WHERE n.state IN ('completed', 'failed', 'cancelled')),
           array_agg(n.id) FILTER (WHERE n.state = 'completed'),
           array_agg(n.id) FILTER (WHERE n.state IN ('failed', 'cancelled')),
           array_agg(n.id) FILTER (WHERE n.state = 'cancelled'),
           array_agg(n.id) FILTER (WHERE o.state IN ('failed', 'cancelled')
                                     AND n.state NOT IN ('completed', 'failed', 'cancelled'))
      INTO ended_ids, done_ids, broken_ids, cancelled_ids, revived_ids
      FROM new_rows AS n
      JOIN old_rows AS o ON o.id = n.id
     WHERE n.in_workflow
       AND o.state IS DISTINCT FROM n.state;

    -- The edges are found with `= ANY (array)` on their indexed column, never by a join to
    -- a set the planner cannot size: a join to unnest() was planned as a scan of all of
    -- job_edges.
    IF ended_ids IS NOT NULL THEN
        -- Jobs waiting for these: an `after` dependent only of those that completed, a
        -- gatherer whatever the end. A gatherer may still be running (it has not reached
        -- gather yet): its counter goes down, its state stays.
        SELECT array_agg(job_id ORDER BY job_id), array_agg(n ORDER BY job_id)
          INTO dependents, settled
          FROM (SELECT e.job_id, count(*)::integer AS n
                  FROM job_edges AS e
                 WHERE e.depends_on = ANY (ended_ids)
                   AND (e.kind = 'gather' OR e.depends_on = ANY (done_ids))
                 GROUP BY e.job_id) AS d;

        IF cardinality(dependents) > 1 THEN
            PERFORM 1 FROM jobs WHERE id = ANY (dependents) ORDER BY id FOR UPDATE;
        END IF;

        IF dependents IS NOT NULL THEN
            WITH woken AS (
                UPDATE jobs AS c
                   SET waits_for = c.waits_for - d.n,
                       state = CASE WHEN c.state <> 'waiting' OR c.waits_for > d.n THEN c.state
                                    WHEN c.run_at > now() THEN 'scheduled'
                                    ELSE 'available' END
                  FROM unnest(dependents, settled) AS d(id, n)
                 WHERE c.id = d.id
                   AND c.state IN ('waiting', 'running')
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
        UPDATE jobs AS c
           SET state = 'waiting',
               finished_at = NULL
          FROM job_edges AS e
         WHERE e.depends_on = ANY (revived_ids)
           AND e.kind = 'after'
           AND c.id = e.job_id
           AND c.state = 'cancelled'
           AND c.errors -> -1 ->> 'kind' = 'dependency'
           AND (c.errors -> -1 ->> 'dependency')::bigint = e.depends_on;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_settle_dependents
    AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION job_settle_dependents();
