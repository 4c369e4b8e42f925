"""Workflows with real worker processes: dependencies, fan-out/fan-in, durable steps that
never run twice, suspension that holds no slot, durable sleep and snooze, exactly-once
effects through `ctx.complete(conn)`. What ran is read from a ledger the tasks write outside
pgqueue (tests/apps/flows.py)."""

from __future__ import annotations

import signal
import threading
from typing import Any

import psycopg
import pytest

import pgqueue
from tests.helpers import spawn_worker, wait_until

APP = "tests.apps.flows:app"
LEDGER = (  # as in tests/apps/flows.py, which needs PGQUEUE_DSN to import
    "CREATE TABLE flow_ledger (job_id bigint NOT NULL, what text NOT NULL,"
    " pid int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())"
)
FAST = ["--poll-interval", "0.1", "--heartbeat-interval", "0.2", "--heartbeat-timeout", "1.5"]


def ledger(db: psycopg.Connection[Any], what: str | None = None) -> list[tuple[Any, ...]]:
    if what is None:
        return db.execute("SELECT job_id, what, at FROM flow_ledger ORDER BY at").fetchall()
    return db.execute(
        "SELECT job_id, what, at FROM flow_ledger WHERE what = %s ORDER BY at", [what]
    ).fetchall()


def stop(*procs: Any) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.communicate(timeout=30)


@pytest.fixture
def flow_app(dsn: str, db: psycopg.Connection[Any]) -> pgqueue.App:
    db.execute(LEDGER)
    return pgqueue.App(dsn)


def task(app: pgqueue.App, name: str) -> Any:
    return app._by_name(name, {})


def test_a_dag_of_1_50_1_runs_in_order_and_the_join_sees_every_result(
    flow_app: pgqueue.App, dsn: str, db: psycopg.Connection[Any]
) -> None:
    app = flow_app
    with psycopg.connect(dsn) as conn:  # the whole DAG in one caller transaction
        root = task(app, "flows.root").options(conn=conn).enqueue(day="2026-12-01")
        parts = (
            task(app, "flows.part")
            .options(after=[root], conn=conn)
            .enqueue_many([{"n": n} for n in range(50)])
        )
        join = task(app, "flows.join").options(after=parts, conn=conn).enqueue()
        conn.commit()
    assert app.get_job(parts[0].id).state is pgqueue.JobState.WAITING
    assert app.get_job(join.id).state is pgqueue.JobState.WAITING
    workers = [spawn_worker(APP, dsn, "-c", "8", *FAST) for _ in range(2)]
    try:
        assert join.wait(timeout=60) == sum(n * n for n in range(50))
    finally:
        stop(*workers)
    rows = ledger(db)
    at = {what: when for _, what, when in rows}
    assert len(rows) == 52
    assert all(at["root"] < at[f"part:{n}"] < at["join"] for n in range(50))
    deps = db.execute(
        "SELECT count(*), count(*) FILTER (WHERE depends_on_state = 'completed')"
        " FROM pgqueue.job_dependencies WHERE job_id = %s",
        [join.id],
    ).fetchone()
    assert deps == (50, 50)


def test_a_rolled_back_dag_leaves_nothing(
    flow_app: pgqueue.App, db: psycopg.Connection[Any]
) -> None:
    app = flow_app
    with psycopg.connect(app.dsn) as conn:
        root = task(app, "flows.root").options(conn=conn).enqueue(day="x")
        task(app, "flows.join").options(after=[root], conn=conn).enqueue()
        conn.rollback()
    assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM pgqueue.job_edges").fetchone() == (0,)


def test_a_failed_parent_cancels_its_descendants_and_a_retry_revives_them(
    flow_app: pgqueue.App, dsn: str, db: psycopg.Connection[Any]
) -> None:
    app = flow_app
    bad = task(app, "flows.broken").enqueue()
    child = task(app, "flows.part").options(after=[bad]).enqueue(n=2)
    grandchild = task(app, "flows.join").options(after=[child]).enqueue()
    worker = spawn_worker(APP, dsn, *FAST)
    try:
        wait_until(lambda: app.unfinished([grandchild.id]) == 0, 30, "the cascade")
        for job in (child, grandchild):
            info = app.get_job(job.id)
            assert info.state is pgqueue.JobState.CANCELLED
            assert info.last_error is not None and info.last_error["type"] == "DependencyFailed"
        assert str(bad.id) in str(app.get_job(child.id).last_error)
        assert str(child.id) in str(app.get_job(grandchild.id).last_error)
        # The operator fixes the source and retries the failed job: the workflow goes on
        # (the retried job fails again here, so the dependents are cancelled again).
        assert app.retry(bad.id)
        assert app.get_job(child.id).state is pgqueue.JobState.WAITING
        assert app.get_job(grandchild.id).state is pgqueue.JobState.WAITING
        wait_until(lambda: app.unfinished([grandchild.id]) == 0, 30, "the second cascade")
    finally:
        stop(worker)
    assert len(ledger(db, "broken")) == 2
    assert ledger(db, "part:2") == []


def test_dependencies_refuse_missing_jobs_and_write_nothing(
    flow_app: pgqueue.App, db: psycopg.Connection[Any]
) -> None:
    app = flow_app
    with pytest.raises(pgqueue.ValidationError, match="do not exist"):
        task(app, "flows.join").options(after=[123456]).enqueue()
    with pytest.raises(pgqueue.ValidationError, match="after="):
        task(app, "flows.join").options(after="7")
    with pytest.raises(pgqueue.ValidationError, match="after="):
        task(app, "flows.join").options(after=[True])
    assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (0,)


def test_a_step_never_runs_twice_when_its_worker_is_killed(
    flow_app: pgqueue.App, dsn: str, db: psycopg.Connection[Any]
) -> None:
    app = flow_app
    job = task(app, "flows.stepped").enqueue(hang=30)
    victim = spawn_worker(APP, dsn, *FAST)
    survivor = None
    try:
        wait_until(lambda: len(ledger(db, "hang")) == 1, 30, "the run to reach its third step")
        victim.kill()
        victim.wait(10)
        # The third step had not finished, so it runs again (briefly this time).
        db.execute("UPDATE pgqueue.jobs SET args = '{\"hang\": 0}' WHERE id = %s", [job.id])
        survivor = spawn_worker(APP, dsn, *FAST)
        assert job.wait(timeout=40) == 6
    finally:
        if victim.poll() is None:
            victim.kill()
        if survivor is not None:
            stop(survivor)
    assert [len(ledger(db, w)) for w in ("fetch", "render", "hang")] == [1, 1, 2]
    info = app.get_job(job.id)
    assert (info.rescue_count, info.attempt) == (1, 2)
    steps = db.execute(
        "SELECT name, result FROM pgqueue.job_steps WHERE job_id = %s ORDER BY name", [job.id]
    ).fetchall()
    assert steps == [("fetch", [1, 2, 3]), ("hang", 0), ("render", 6)]


def test_a_suspended_parent_holds_no_slot(
    flow_app: pgqueue.App, dsn: str, db: psycopg.Connection[Any]
) -> None:
    """With concurrency 1, a parent that gathers three children cannot hold the only slot
    while they wait: it suspends, they run, it resumes."""
    app = flow_app
    parent = task(app, "flows.fan").enqueue(n=3)
    worker = spawn_worker(APP, dsn, "-c", "1", "--prefetch", "0", *FAST)
    try:
        assert parent.wait(timeout=40) == 0 + 1 + 4
    finally:
        stop(worker)
    runs = [w for _, w, _ in ledger(db) if w in ("fan", "joined")]
    assert runs == ["fan", "fan", "joined"]  # spawned once, resumed once
    info = app.get_job(parent.id)
    assert info.attempt == 1  # the suspension cost no attempt
    assert len(ledger(db, "square:0")) == 1
    assert db.execute(
        "SELECT count(*) FROM pgqueue.jobs WHERE task = 'flows.square'"
    ).fetchone() == (3,)


def test_a_worker_killed_while_its_parent_is_suspended_loses_nothing(
    flow_app: pgqueue.App, dsn: str, db: psycopg.Connection[Any]
) -> None:
    app = flow_app
    parent = task(app, "flows.fan").enqueue(n=4, pause=1.5)
    victim = spawn_worker(APP, dsn, "-c", "4", *FAST)
    survivor = None
    try:
        wait_until(
            lambda: app.get_job(parent.id).state is pgqueue.JobState.WAITING, 30, "suspension"
        )
        wait_until(lambda: len(ledger(db)) >= 3, 30, "children running")
        victim.kill()
        victim.wait(10)
        survivor = spawn_worker(APP, dsn, "-c", "4", *FAST)
        assert parent.wait(timeout=60) == 0 + 1 + 4 + 9
    finally:
        if victim.poll() is None:
            victim.kill()
        if survivor is not None:
            stop(survivor)
    assert len(ledger(db, "fan")) == 2  # the first run and the resume; no children respawned
    assert db.execute(
        "SELECT count(*) FROM pgqueue.jobs WHERE task = 'flows.square'"
    ).fetchone() == (4,)


def test_gather_raises_job_failed_for_a_failed_child(
    flow_app: pgqueue.App, dsn: str, db: psycopg.Connection[Any]
) -> None:
    app = flow_app
    parent = task(app, "flows.fan_fails").enqueue()
    worker = spawn_worker(APP, dsn, *FAST)
    try:
        result = parent.wait(timeout=30)
    finally:
        stop(worker)
    assert result.endswith("failed") and len(ledger(db, "caught")) == 1


def test_async_fan_out_and_in(flow_app: pgqueue.App, dsn: str) -> None:
    parent = task(flow_app, "flows.fan_async").enqueue(n=5)
    worker = spawn_worker(APP, dsn, *FAST)
    try:
        assert parent.wait(timeout=30) == sum(n * n for n in range(5))
    finally:
        stop(worker)


def test_cancelling_a_waiting_parent_cancels_its_children(
    flow_app: pgqueue.App, dsn: str, db: psycopg.Connection[Any]
) -> None:
    app = flow_app
    parent = task(app, "flows.fan").enqueue(n=3, pause=20)
    worker = spawn_worker(APP, dsn, "-c", "1", "--prefetch", "0", *FAST)
    try:
        wait_until(
            lambda: app.get_job(parent.id).state is pgqueue.JobState.WAITING, 30, "suspension"
        )
        wait_until(lambda: len(ledger(db, "square:0")) == 1, 30, "a child running")
        assert app.cancel(parent.id)
        children = [
            r[0]
            for r in db.execute(
                "SELECT depends_on FROM pgqueue.job_edges WHERE job_id = %s", [parent.id]
            ).fetchall()
        ]
        wait_until(lambda: app.unfinished(children) == 0, 30, "the children to end")
    finally:
        stop(worker)
    states = {app.get_job(c).state for c in children}
    assert states == {pgqueue.JobState.CANCELLED}


def test_durable_sleep_and_snooze_cost_no_attempt(
    flow_app: pgqueue.App, dsn: str, db: psycopg.Connection[Any]
) -> None:
    app = flow_app
    sleeper = task(app, "flows.sleeper").enqueue(seconds=1.0)
    snoozer = task(app, "flows.snoozer").enqueue(times=3)
    worker = spawn_worker(APP, dsn, "-c", "1", "--prefetch", "0", *FAST)
    try:
        wait_until(lambda: app.get_job(sleeper.id).state is pgqueue.JobState.SCHEDULED, 20, "sleep")
        assert sleeper.wait(timeout=30) == "rested"
        assert snoozer.wait(timeout=30) == 4  # max_attempts=1, yet four runs
    finally:
        stop(worker)
    assert [w for j, w, _ in ledger(db) if j == sleeper.id] == ["run:1", "run:1", "woke"]
    assert app.get_job(sleeper.id).attempt == 1
    assert app.get_job(snoozer.id).attempt == 1


def test_complete_in_the_callers_transaction_is_exactly_once(
    flow_app: pgqueue.App, dsn: str, db: psycopg.Connection[Any]
) -> None:
    app = flow_app
    db.execute("CREATE TABLE payments (order_id int NOT NULL)")
    ok = task(app, "flows.pay").enqueue(order=1)
    task(app, "flows.pay").enqueue(order=2, lose_lease=True)
    worker = spawn_worker(APP, dsn, *FAST)
    try:
        assert ok.wait(timeout=30) == {"paid": 1}  # the result given to complete()
        wait_until(lambda: len(ledger(db, "lease lost")) == 1, 30, "the lost lease")
    finally:
        stop(worker)
    paid = [r[0] for r in db.execute("SELECT order_id FROM payments").fetchall()]
    assert paid == [1]
    out, _ = worker.communicate(timeout=1)
    stale = [line for line in out.decode().splitlines() if "no longer leased" in line]
    # The lost run's failure is stale (the lease moved on); the completed one's own write
    # after complete() is a quiet no-op, not a warning.
    assert stale and all(str(ok.id) not in line.split(":")[-1] for line in stale), stale


def test_misusing_the_workflow_tools_is_a_clear_error(
    flow_app: pgqueue.App, dsn: str, db: psycopg.Connection[Any]
) -> None:
    stranger = task(flow_app, "flows.root").enqueue(day="x")
    job = task(flow_app, "flows.misuse").enqueue(stranger=stranger.id)
    worker = spawn_worker(APP, dsn, *FAST)
    try:
        errors = job.wait(timeout=30)
    finally:
        stop(worker)
    assert len(errors) == 4, errors
    assert "already ran in this run" in errors[0]
    assert "gather takes jobs this job spawned" in errors[1]
    assert "JSON" in errors[2] or "json" in errors[2]
    assert "non-negative" in errors[3]
    # Nothing half-written: the refused step stored nothing.
    steps = db.execute(
        "SELECT name FROM pgqueue.job_steps WHERE job_id = %s ORDER BY name", [job.id]
    ).fetchall()
    assert steps == [("once",)]


def test_snooze_and_context_outside_a_task_are_clear_errors(flow_app: pgqueue.App) -> None:
    with pytest.raises(LookupError, match="inside a running task"):
        pgqueue.current_job()
    with pytest.raises(ValueError, match="Snooze"):
        pgqueue.Snooze(-1)
    with pytest.raises(ValueError, match="Snooze"):
        pgqueue.Snooze(10**9)


def test_prune_keeps_a_parent_that_a_waiting_child_needs(
    flow_app: pgqueue.App, db: psycopg.Connection[Any]
) -> None:
    app = flow_app
    first = task(app, "flows.root").enqueue(day="a")
    second = task(app, "flows.root").enqueue(day="b")
    child = task(app, "flows.join").options(after=[first, second]).enqueue()
    db.execute(
        "UPDATE pgqueue.jobs SET state = 'completed', finished_at = now() - interval '30 days'"
        " WHERE id = %s",
        [first.id],
    )
    assert app.get_job(child.id).state is pgqueue.JobState.WAITING
    app.prune(older_than=0)
    assert app.get_job(first.id).state is pgqueue.JobState.COMPLETED


def test_children_completed_by_several_workers_at_once_wake_their_parent_once(
    flow_app: pgqueue.App, dsn: str, db: psycopg.Connection[Any]
) -> None:
    """Three worker processes complete the children of one parent in concurrent batches,
    so statements in different transactions settle the same parent (migration 014 settles
    once per statement, by the number of children each settled). A lost or doubled
    decrement shows up as a parent that never wakes, or wakes before its last child."""
    app = flow_app
    n = 240
    fan = task(app, "flows.fan").enqueue(n=n)
    root = task(app, "flows.root").enqueue(day="x")
    parts = task(app, "flows.part").options(after=[root]).enqueue_many([{"n": i} for i in range(n)])
    join = task(app, "flows.join").options(after=parts).enqueue()
    workers = [spawn_worker(APP, dsn, "-c", "4", *FAST) for _ in range(3)]
    try:
        assert fan.wait(timeout=120) == sum(i * i for i in range(n))
        assert join.wait(timeout=120) == sum(i * i for i in range(n))
    finally:
        stop(*workers)
    rows = ledger(db)
    # The gatherer ran twice (the spawn, then one resume after its last child), the `after`
    # join once after every part: never woken early, never twice.
    fan_runs = [at for job, what, at in rows if job == fan.id and what == "fan"]
    squares = [at for _, what, at in rows if what.startswith("square:")]
    assert len(fan_runs) == 2 and len(squares) == n
    assert max(squares) < fan_runs[1]
    assert len(ledger(db, "joined")) == 1
    joins = ledger(db, "join")
    part_times = [at for _, what, at in rows if what.startswith("part:")]
    assert len(joins) == 1 and len(part_times) == n and max(part_times) < joins[0][2]
    assert len({pid for pid in db.execute("SELECT DISTINCT pid FROM flow_ledger")}) > 1
    counters = db.execute(
        "SELECT count(*) FILTER (WHERE waits_for <> 0),"
        " count(*) FILTER (WHERE state <> 'completed') FROM pgqueue.jobs"
    ).fetchone()
    assert counters == (0, 0)


def _fan_in(db: psycopg.Connection[Any], children: int) -> tuple[int, list[int]]:
    """A parent waiting for `children` running children (gather edges), written directly."""
    row = db.execute(
        "INSERT INTO pgqueue.jobs (task, state, in_workflow, waits_for)"
        " VALUES ('flows.fan', 'waiting', true, %s) RETURNING id",
        [children],
    ).fetchone()
    assert row is not None
    kids = db.execute(
        "INSERT INTO pgqueue.jobs (task, state, in_workflow, lease)"
        " SELECT 'flows.square', 'running', true, gen_random_uuid()"
        " FROM generate_series(1, %s) RETURNING id",
        [children],
    ).fetchall()
    ids = [int(str(k[0])) for k in kids]
    db.execute(
        "INSERT INTO pgqueue.job_edges (job_id, depends_on, kind)"
        " SELECT %s, unnest(%s::bigint[]), 'gather'",
        [row[0], ids],
    )
    return int(str(row[0])), ids


COMPLETE = "UPDATE pgqueue.jobs SET state = 'completed', lease = NULL WHERE id = ANY(%s)"


def test_two_transactions_settling_one_parent_lose_no_decrement(
    dsn: str, db: psycopg.Connection[Any]
) -> None:
    """READ COMMITTED: the second statement waits for the first one's lock on the parent,
    then subtracts its own count from the committed one."""
    parent, kids = _fan_in(db, 4)
    first = psycopg.connect(dsn)
    second = psycopg.connect(dsn, autocommit=True)
    try:
        first.execute(COMPLETE, [kids[:2]])
        blocked = threading.Thread(target=second.execute, args=(COMPLETE, [kids[2:3]]))
        blocked.start()
        pid = second.info.backend_pid
        wait_until(
            lambda: (
                db.execute(
                    "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid]
                ).fetchone()
                == ("Lock",)
            ),
            10,
            "the second statement to wait for the parent's lock",
        )
        first.commit()
        blocked.join(10)
        assert not blocked.is_alive()
    finally:
        first.close()
        second.close()
    state = "SELECT state, waits_for FROM pgqueue.jobs WHERE id = %s"
    assert db.execute(state, [parent]).fetchone() == ("waiting", 1)
    db.execute(COMPLETE, [kids[3:]])
    assert db.execute(state, [parent]).fetchone() == ("available", 0)


def test_one_statement_ending_two_parents_counts_the_completed_one_before_cancelling(
    flow_app: pgqueue.App, db: psycopg.Connection[Any]
) -> None:
    """A dependent of a job that completed and one that failed in the same statement is
    cancelled naming the failed one, with the completed one already subtracted: a retry of
    the failed one then lets it run once that one completes (whatever order the statement
    visited the two rows in)."""
    app = flow_app
    failing = task(app, "flows.root").enqueue(day="a")  # the lower id: visited first
    fine = task(app, "flows.root").enqueue(day="b")
    child = task(app, "flows.join").options(after=[fine, failing]).enqueue()
    db.execute(
        "UPDATE pgqueue.jobs SET state = CASE WHEN id = %s THEN 'failed' ELSE 'completed' END,"
        " finished_at = now() WHERE id = ANY(%s)",
        [failing.id, [failing.id, fine.id]],
    )
    info = app.get_job(child.id)
    assert info.state is pgqueue.JobState.CANCELLED
    assert info.last_error is not None and str(failing.id) in info.last_error["message"]
    assert app.retry(failing.id)
    assert app.get_job(child.id).state is pgqueue.JobState.WAITING
    db.execute("UPDATE pgqueue.jobs SET state = 'completed' WHERE id = %s", [failing.id])
    assert app.get_job(child.id).state is pgqueue.JobState.AVAILABLE


def test_depending_on_a_finished_job_settles_nothing_twice(
    flow_app: pgqueue.App, db: psycopg.Connection[Any]
) -> None:
    """`after=` on a job that already completed marks it in_workflow without a state change:
    the trigger sees that update too, and must not count the completion again."""
    app = flow_app
    done = task(app, "flows.root").enqueue(day="a")
    db.execute("UPDATE pgqueue.jobs SET state = 'completed' WHERE id = %s", [done.id])
    pending = task(app, "flows.root").enqueue(day="b")
    first = task(app, "flows.join").options(after=[done, pending]).enqueue()
    second = task(app, "flows.join").options(after=[done, pending]).enqueue()
    counts = db.execute(
        "SELECT state, waits_for FROM pgqueue.jobs WHERE id = ANY(%s) ORDER BY id",
        [[first.id, second.id]],
    ).fetchall()
    assert counts == [("waiting", 1), ("waiting", 1)]


# --- the pending-children counter (waits_for) -----------------------------------------------

#: Jobs whose counter disagrees with their edges: a gather edge counts while the child has not
#: ended, an `after` edge while the job depended on has not completed, whatever the state of
#: the job that waits (migration 018).
WRONG_COUNTERS = """
SELECT j.id, j.state, j.waits_for, count(e.depends_on) FILTER (
           WHERE CASE e.kind WHEN 'gather' THEN d.state NOT IN ('completed', 'failed', 'cancelled')
                             ELSE d.state <> 'completed' END) AS unsettled
  FROM pgqueue.jobs AS j
  LEFT JOIN pgqueue.job_edges AS e ON e.job_id = j.id
  LEFT JOIN pgqueue.jobs AS d ON d.id = e.depends_on
 WHERE j.in_workflow
 GROUP BY j.id
HAVING j.waits_for <> count(e.depends_on) FILTER (
           WHERE CASE e.kind WHEN 'gather' THEN d.state NOT IN ('completed', 'failed', 'cancelled')
                             ELSE d.state <> 'completed' END)
"""


def wrong_counters(db: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return db.execute(WRONG_COUNTERS).fetchall()


def children_of(db: psycopg.Connection[Any], parent: int) -> dict[str, int]:
    rows = db.execute(
        "SELECT j.task, j.id FROM pgqueue.job_edges AS e JOIN pgqueue.jobs AS j"
        " ON j.id = e.depends_on WHERE e.job_id = %s",
        [parent],
    ).fetchall()
    return {str(task): int(str(job_id)) for task, job_id in rows}


@pytest.mark.parametrize("then", ["sleep", "retry"])
def test_children_that_end_while_their_parent_sleeps_or_retries_count_it_down(
    flow_app: pgqueue.App, dsn: str, db: psycopg.Connection[Any], then: str
) -> None:
    """The parent spawns two children and sleeps (`scheduled`) or fails an attempt
    (`retrying`) before it gathers. The quick child ends meanwhile; the slow one is still
    running when the parent gathers, so the parent suspends on its counter, and the slow
    child's end must bring that counter to 0."""
    app = flow_app
    parent = task(app, "flows.fan_pause").enqueue(pauses=[0.3, 3.0], then=then, seconds=1.0)
    worker = spawn_worker(APP, dsn, "-c", "3", *FAST)
    try:
        assert parent.wait(timeout=20) == 0 + 1
    finally:
        stop(worker)
    assert len(ledger(db, "joined")) == 1
    assert wrong_counters(db) == []


@pytest.mark.parametrize("child", ["flows.flaky", "flows.retry_once"])
def test_a_failed_child_that_is_retried_holds_its_parent_again(
    flow_app: pgqueue.App, dsn: str, db: psycopg.Connection[Any], child: str
) -> None:
    """A child that fails and is retried (by an operator, or by its own attempts) is not over
    for its parent: the parent, gathering it with a slow sibling, must not be woken before
    both have ended. A parent woken early finds a child unfinished and suspends again, with
    nothing left to wake it but its own counter."""
    app = flow_app
    parent = task(app, "flows.fan_mixed").enqueue(child=child, pause=3.0)
    worker = spawn_worker(APP, dsn, "-c", "3", *FAST)
    try:
        if child == "flows.flaky":
            wait_until(lambda: len(children_of(db, parent.id)) == 2, 20, "the spawn")
            flaky = children_of(db, parent.id)[child]
            wait_until(
                lambda: app.get_job(flaky).state is pgqueue.JobState.FAILED, 20, "the failure"
            )
            assert app.retry(flaky)
            waits = "SELECT state, waits_for FROM pgqueue.jobs WHERE id = %s"
            assert db.execute(waits, [parent.id]).fetchone() in (("waiting", 2), ("running", 2))
        assert parent.wait(timeout=30) == 9 + 4
    finally:
        stop(worker)
    assert len(ledger(db, "fan")) == 2  # the spawn and one resume: never woken early
    slow = children_of(db, parent.id)["flows.square"]
    row = db.execute("SELECT finished_at FROM pgqueue.jobs WHERE id = %s", [slow]).fetchone()
    assert row is not None and row[0] < ledger(db, "fan")[1][2]
    assert wrong_counters(db) == []


def test_a_cancelled_parent_that_is_retried_runs_again(
    flow_app: pgqueue.App, db: psycopg.Connection[Any]
) -> None:
    """Cancelling a waiting parent cancels its children, which ends them: the parent's
    counter goes to 0 although the parent is no longer waiting, so a retry of the parent
    makes it runnable (its gather then reports the cancelled children)."""
    app = flow_app
    parent, kids = _fan_in(db, 3)
    db.execute(
        "UPDATE pgqueue.jobs SET state = 'available', lease = NULL WHERE id = ANY(%s)", [kids]
    )
    assert app.cancel(parent)
    assert {app.get_job(k).state for k in kids} == {pgqueue.JobState.CANCELLED}
    assert app.retry(parent)
    assert app.get_job(parent).state is pgqueue.JobState.AVAILABLE
    assert wrong_counters(db) == []


def test_a_dependent_cancelled_by_one_dependency_still_counts_the_others(
    flow_app: pgqueue.App, db: psycopg.Connection[Any]
) -> None:
    """A dependent cancelled because one dependency failed still has its other dependency
    settled when that one completes; a retry of the failed one then leaves it waiting for
    that one alone."""
    app = flow_app
    failing = task(app, "flows.root").enqueue(day="a")
    other = task(app, "flows.root").enqueue(day="b")
    child = task(app, "flows.join").options(after=[failing, other]).enqueue()
    end = "UPDATE pgqueue.jobs SET state = %s, finished_at = now() WHERE id = %s"
    db.execute(end, ["failed", failing.id])
    assert app.get_job(child.id).state is pgqueue.JobState.CANCELLED
    db.execute(end, ["completed", other.id])
    assert app.retry(failing.id)
    assert app.get_job(child.id).state is pgqueue.JobState.WAITING
    db.execute(end, ["completed", failing.id])
    assert app.get_job(child.id).state is pgqueue.JobState.AVAILABLE
    assert wrong_counters(db) == []


# --- unique_key while waiting ----------------------------------------------------------------


def test_a_job_waiting_for_its_dependency_holds_its_unique_key(
    flow_app: pgqueue.App, dsn: str, db: psycopg.Connection[Any]
) -> None:
    """A duplicate enqueue while the first job waits for its dependency returns that job,
    from Python and from SQL, and only it runs once the dependency completes."""
    app = flow_app
    root = task(app, "flows.root").enqueue(day="a")
    first = task(app, "flows.join").options(after=[root], unique_key="join-a").enqueue()
    assert app.get_job(first.id).state is pgqueue.JobState.WAITING
    again = task(app, "flows.join").options(unique_key="join-a").enqueue()
    assert (again.id, again.duplicate) == (first.id, True)
    with_after = task(app, "flows.join").options(after=[root], unique_key="join-a").enqueue()
    assert (with_after.id, with_after.duplicate) == (first.id, True)
    by_sql = db.execute("SELECT pgqueue.enqueue('flows.join', unique_key => 'join-a')").fetchone()
    assert by_sql == (first.id,)
    worker = spawn_worker(APP, dsn, *FAST)
    try:
        assert first.wait(timeout=30) == 0
    finally:
        stop(worker)
    assert len(ledger(db, "join")) == 1
    assert db.execute(
        "SELECT count(*) FROM pgqueue.jobs WHERE unique_key = 'join-a'"
    ).fetchone() == (1,)


def test_a_suspended_parent_holds_its_unique_key(
    flow_app: pgqueue.App, dsn: str, db: psycopg.Connection[Any]
) -> None:
    app = flow_app
    fan = task(app, "flows.fan").options(unique_key="fan-1")
    parent = fan.enqueue(n=2, pause=1.0)
    worker = spawn_worker(APP, dsn, "-c", "2", *FAST)
    try:
        wait_until(
            lambda: app.get_job(parent.id).state is pgqueue.JobState.WAITING, 20, "suspension"
        )
        again = fan.enqueue(n=2, pause=1.0)
        assert (again.id, again.duplicate) == (parent.id, True)
        assert parent.wait(timeout=30) == 0 + 1
    finally:
        stop(worker)
    assert len(ledger(db, "joined")) == 1


def test_a_retry_leaves_cancelled_a_dependent_whose_unique_key_was_taken(
    flow_app: pgqueue.App, db: psycopg.Connection[Any]
) -> None:
    """A dependent cancelled by its dependency's failure released its key, and another job
    took it: retrying the dependency does not bring back a second job with that key."""
    app = flow_app
    bad = task(app, "flows.root").enqueue(day="a")
    child = task(app, "flows.join").options(after=[bad], unique_key="k").enqueue()
    kept = task(app, "flows.join").options(after=[bad], unique_key="other").enqueue()
    db.execute(
        "UPDATE pgqueue.jobs SET state = 'failed', finished_at = now() WHERE id = %s", [bad.id]
    )
    assert app.get_job(child.id).state is pgqueue.JobState.CANCELLED
    taker = task(app, "flows.join").options(unique_key="k").enqueue()
    assert not taker.duplicate
    assert app.retry(bad.id)
    assert app.get_job(child.id).state is pgqueue.JobState.CANCELLED
    assert app.get_job(kept.id).state is pgqueue.JobState.WAITING
    assert app.get_job(taker.id).state is pgqueue.JobState.AVAILABLE


def test_gather_reads_its_children_as_one_row(
    flow_app: pgqueue.App, db: psycopg.Connection[Any]
) -> None:
    """What `gather` decides on, from one row: the pending count, the first missing and the
    first failed child in the order asked for, and the results in that order, repeats
    included. The decisions: not found, suspend, JobFailed, or the results."""
    from pgqueue._context import JobContext, Suspended
    from pgqueue._core import workflow

    app = flow_app
    rows = db.execute(
        "INSERT INTO pgqueue.jobs (task, state, result, errors) VALUES"
        " ('t', 'completed', '1', '[]'),"
        ' (\'t\', \'failed\', NULL, \'[{"type": "A"}, {"type": "B"}]\'),'
        " ('t', 'completed', '{\"a\": [1]}', '[]'), ('t', 'running', NULL, '[]'),"
        " ('t', 'cancelled', NULL, '[]') RETURNING id"
    ).fetchall()
    done, failed, other, running, cancelled = (int(str(r[0])) for r in rows)

    def gathered(ids: list[int]) -> workflow.Gathered:
        return app.client.run(workflow.gather_state(ids))  # type: ignore[no-any-return]

    state = gathered([other, done, other])
    assert state == workflow.Gathered(0, None, None, [{"a": [1]}, 1, {"a": [1]}])
    assert JobContext._gathered(state) == [{"a": [1]}, 1, {"a": [1]}]
    state = gathered([done, cancelled, failed])
    assert (state.pending, state.missing) == (0, None)
    assert state.failed == (cancelled, "cancelled", None)
    with pytest.raises(pgqueue.JobFailed, match=f"job {cancelled} cancelled"):
        JobContext._gathered(state)
    assert gathered([failed]).failed == (failed, "failed", {"type": "B"})
    state = gathered([running, failed])
    assert state.pending == 1
    with pytest.raises(Suspended):
        JobContext._gathered(state)
    state = gathered([done, 10**12, 10**12 + 1])
    assert state.missing == 10**12
    with pytest.raises(pgqueue.JobNotFound, match=str(10**12)):
        JobContext._gathered(state)
