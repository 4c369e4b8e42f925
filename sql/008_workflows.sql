-- Workflows, built from ordinary jobs: dependencies (`after=`), jobs that spawn children and
-- gather their results (suspending meanwhile: `waiting`, no slot held), durable steps, and
-- durable sleep.
--
-- A job in a workflow has edges in job_edges: (job_id, depends_on, kind). `after` edges come
-- from `options(after=[...])`: job_id waits until depends_on completes, and is cancelled if it
-- fails or is cancelled. `gather` edges come from `ctx.spawn` / `ctx.map`: job_id spawned
-- depends_on, and wakes when it ends, however it ends (`gather` raises JobFailed for a
-- failed child). `waits_for` counts the edges of a job still unsettled; the job that settles
-- the last one moves it from `waiting` to `available`.
--
-- Settling is one trigger on the jobs table, so every way a job ends (the worker's batched
-- completion, a failure, an operator's cancel, a rescue that fails a poison job, an expiry)
-- settles its dependents in the same statement, with no poller. Its WHEN clause reads
-- in_workflow, so a job outside any workflow pays one boolean test per state change. Races
-- are settled by row locks: adding an edge locks the job depended on (UPDATE), so its end
-- either happened before (the edge sees it) or waits for the edge to commit and then settles
-- it (a trigger statement takes a fresh snapshot); the counter is decremented by UPDATEs,
-- which re-read the latest row version after waiting for its lock.

ALTER TABLE jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_state_check
    CHECK (state IN ('scheduled', 'available', 'running', 'retrying', 'completed', 'failed',
                     'cancelled', 'waiting'));

ALTER TABLE jobs ADD COLUMN waits_for integer NOT NULL DEFAULT 0,
                 ADD COLUMN in_workflow boolean NOT NULL DEFAULT false;

CREATE TABLE job_edges (
    job_id     bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    depends_on bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    kind       text NOT NULL CHECK (kind IN ('after', 'gather')),
    PRIMARY KEY (job_id, depends_on),
    CHECK (job_id <> depends_on)
);
CREATE INDEX job_edges_depends_on_idx ON job_edges (depends_on);

-- A durable step's stored result, by name within its job; pruned with the job. Read through
-- the view job_steps.
CREATE TABLE steps (
    job_id      bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    result      jsonb,
    finished_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, name)
);

CREATE FUNCTION job_settle_dependents() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT
AS $$
DECLARE
    woken_queues integer;
BEGIN
    IF NEW.state IN ('completed', 'failed', 'cancelled') THEN
        -- Jobs waiting for this one: an `after` dependent only if it completed, a gatherer
        -- whatever the end. A gatherer may still be running (it has not reached gather yet):
        -- its counter goes down, its state stays.
        WITH woken AS (
            UPDATE jobs AS c
               SET waits_for = c.waits_for - 1,
                   state = CASE WHEN c.state <> 'waiting' OR c.waits_for > 1 THEN c.state
                                WHEN c.run_at > now() THEN 'scheduled'
                                ELSE 'available' END
              FROM job_edges AS e
             WHERE e.depends_on = NEW.id
               AND c.id = e.job_id
               AND (e.kind = 'gather' OR NEW.state = 'completed')
               AND c.state IN ('waiting', 'running')
            RETURNING c.queue, c.state
        )
        SELECT count(*) INTO woken_queues
          FROM (SELECT pg_notify(notify_channel(), queue) FROM woken
                 WHERE state = 'available' GROUP BY queue) AS n;

        IF NEW.state IN ('failed', 'cancelled') THEN
            -- Its `after` dependents can never run: cancelled, naming it. Their own trigger
            -- cancels their dependents in turn.
            UPDATE jobs AS c
               SET state = 'cancelled',
                   finished_at = now(),
                   errors = c.errors || jsonb_build_array(jsonb_build_object(
                       'type', 'DependencyFailed',
                       'message', format('job %s, which this job depends on, ended %s',
                                         NEW.id, NEW.state),
                       'kind', 'dependency',
                       'dependency', NEW.id,
                       'attempt', c.attempt,
                       'at', now()))
              FROM job_edges AS e
             WHERE e.depends_on = NEW.id
               AND e.kind = 'after'
               AND c.id = e.job_id
               AND c.state = 'waiting';
        END IF;

        IF NEW.state = 'cancelled' THEN
            -- A cancelled job takes the children it spawned with it: those not started are
            -- cancelled, running ones are asked to stop.
            UPDATE jobs AS c
               SET state = CASE WHEN c.state = 'running' THEN c.state ELSE 'cancelled' END,
                   finished_at = CASE WHEN c.state = 'running' THEN c.finished_at
                                      ELSE now() END,
                   cancel_requested = true,
                   errors = CASE WHEN c.state = 'running' THEN c.errors
                                 ELSE c.errors || jsonb_build_array(jsonb_build_object(
                                     'type', 'ParentCancelled',
                                     'message', format('job %s, which spawned this job, was'
                                                       ' cancelled', NEW.id),
                                     'kind', 'dependency',
                                     'dependency', NEW.id,
                                     'attempt', c.attempt,
                                     'at', now())) END
              FROM job_edges AS e
             WHERE e.job_id = NEW.id
               AND e.kind = 'gather'
               AND c.id = e.depends_on
               AND c.state IN ('scheduled', 'available', 'retrying', 'waiting', 'running');
        END IF;
    ELSIF OLD.state IN ('failed', 'cancelled') THEN
        -- Retried after its end: the dependents it cancelled wait for it again (and theirs,
        -- through their own trigger), so retrying a failed step lets the workflow go on.
        UPDATE jobs AS c
           SET state = 'waiting',
               finished_at = NULL
          FROM job_edges AS e
         WHERE e.depends_on = NEW.id
           AND e.kind = 'after'
           AND c.id = e.job_id
           AND c.state = 'cancelled'
           AND c.errors -> -1 ->> 'kind' = 'dependency'
           AND (c.errors -> -1 ->> 'dependency')::bigint = NEW.id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_settle_dependents
    AFTER UPDATE OF state ON jobs
    FOR EACH ROW
    WHEN (NEW.in_workflow AND OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION job_settle_dependents();

-- What each job depends on, and where that stands.
CREATE VIEW job_dependencies AS
SELECT e.job_id,
       e.depends_on,
       CASE WHEN p.state = 'scheduled' AND p.run_at <= now() THEN 'available'
            WHEN p.state = 'running' AND p.started_at IS NULL THEN 'claimed'
            ELSE p.state END AS depends_on_state,
       e.kind
  FROM job_edges AS e
  JOIN jobs AS p ON p.id = e.depends_on;

CREATE VIEW job_steps AS SELECT job_id, name, result, finished_at FROM steps;

-- Waiting jobs per queue, for queue_stats (013).
CREATE INDEX jobs_waiting_idx ON jobs (queue) WHERE state = 'waiting';
