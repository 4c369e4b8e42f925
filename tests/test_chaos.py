"""The chaos suite: real worker processes, real faults, and a checker that counts the damage.

Every execution of a test task is written to a ledger outside pgqueue's tables, and a trigger
records every transition into `completed`, so the checker does not have to trust pgqueue's
own bookkeeping. After a full drain it counts:

- lost: jobs enqueued and committed but never completed;
- duplicate successes: jobs that became `completed` more than once;
- re-executions: task runs beyond the first, per job;
- running: rows left `running`.

Each scenario runs a short version by default (CI) and a full one with `pytest -m slow`.
The cluster is owned by this module, so the tests may restart it and kill its backends.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql

import pgqueue
from tests.conftest import _with_db
from tests.helpers import spawn_worker, started_workers, wait_until
from tests.pgcluster import LocalCluster, find_bindir

SHORT, FULL = 2_000, 20_000
SIZES = [pytest.param(SHORT, id="short"), pytest.param(FULL, id="full", marks=pytest.mark.slow)]
WORKER_ARGS = [
    "-c",
    "8",
    "--poll-interval",
    "0.2",
    "--heartbeat-interval",
    "0.3",
    "--heartbeat-timeout",
    "3",
    "--shutdown-grace",
    "5",
]

CHECKER_DDL = """
CREATE TABLE ledger (job_id bigint NOT NULL, n int NOT NULL, pid int NOT NULL);
CREATE TABLE completions (job_id bigint NOT NULL, at timestamptz NOT NULL DEFAULT now());
CREATE FUNCTION record_completion() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO completions (job_id) VALUES (NEW.id);
    RETURN NEW;
END $$;
CREATE TRIGGER record_completion AFTER UPDATE OF state ON pgqueue.jobs
    FOR EACH ROW WHEN (NEW.state = 'completed' AND OLD.state IS DISTINCT FROM 'completed')
    EXECUTE FUNCTION record_completion();
"""


@dataclass
class Damage:
    lost: int
    duplicate_successes: int
    re_executions: int
    running: int


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    bindir = find_bindir()
    assert bindir is not None, "the chaos suite needs PostgreSQL server binaries (or pgserver)"
    owned = LocalCluster(bindir)
    owned.start()
    yield owned
    owned.destroy()


@pytest.fixture
def chaos_dsn(cluster: LocalCluster) -> Iterator[str]:
    name = f"chaos_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(cluster.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = _with_db(cluster.dsn, name)
    pgqueue.App(dsn).migrate()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(CHECKER_DDL)
    yield dsn
    with psycopg.connect(cluster.dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def check(dsn: str, ids: list[int]) -> Damage:
    with psycopg.connect(dsn) as conn:
        # Shown by pytest when an assertion fails: which jobs, and why.
        for row in conn.execute(
            "SELECT id, state, attempt, rescue_count, errors -> -1"
            " FROM pgqueue.jobs WHERE state <> 'completed'"
            " AND task = 'ledger.record' LIMIT 5"
        ):
            print("not completed:", str(row)[:500])

        def one(query: str, *params: Any) -> int:
            row = conn.execute(query, params or None).fetchone()
            return int(row[0]) if row and row[0] is not None else 0

        return Damage(
            lost=one(
                "SELECT count(*) FROM unnest(%s::bigint[]) AS i(id) WHERE NOT EXISTS"
                " (SELECT 1 FROM pgqueue.jobs j WHERE j.id = i.id"
                "  AND j.state = 'completed')",
                ids,
            ),
            duplicate_successes=one(
                "SELECT count(*) FROM (SELECT job_id FROM completions"
                " GROUP BY job_id HAVING count(*) > 1) d"
            ),
            re_executions=one("SELECT count(*) - count(DISTINCT job_id) FROM ledger"),
            running=one("SELECT count(*) FROM pgqueue.jobs WHERE state = 'running'"),
        )


def enqueue(dsn: str, n: int) -> list[int]:
    # The attempts the task declares: a scenario may fail a job's run several times (each
    # server restart breaks the task's own connection), and a job that used up its
    # attempts would read as lost when its retry policy, not the queue, gave up on it.
    jobs = pgqueue.App(dsn).enqueue_many(
        "ledger.record", ({"n": i} for i in range(n)), max_attempts=10
    )
    return [j.id for j in jobs]


def drain(dsn: str, ids: list[int], timeout: float) -> None:
    app = pgqueue.App(dsn)
    try:
        wait_until(lambda: app.unfinished(ids) == 0, timeout, f"{len(ids)} jobs to drain")
    except AssertionError:
        with psycopg.connect(dsn) as conn:  # shown by pytest: what is stuck, and where
            for row in conn.execute(
                "SELECT j.id, j.state, j.attempt, j.rescue_count, j.started_at - now(),"
                " j.worker_id, w.stopped_at, now() - w.heartbeat_at"
                " FROM pgqueue.jobs j LEFT JOIN pgqueue.workers w ON w.id = j.worker_id"
                " WHERE j.state <> 'completed' LIMIT 10"
            ):
                print("unfinished:", row)
        raise
    finally:
        app.close()


def stop_all(procs: list[subprocess.Popen[bytes]]) -> list[int]:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    codes = []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        codes.append(proc.returncode)
        # Called from a `finally` while the test is failing: show what each worker
        # complained about last.
        if sys.exc_info()[0] is not None:
            lines = (out or b"").decode(errors="replace").splitlines()
            for line in [ln for ln in lines if "WARN" in ln or "ERROR" in ln][-15:]:
                print(f"worker {proc.pid}: {line[:300]}")
            for line in lines[-12:]:  # how it ended: a traceback, the stop line
                print(f"worker {proc.pid} (end): {line[:300]}")
    return codes


@pytest.mark.parametrize("n", SIZES)
def test_no_faults(chaos_dsn: str, n: int) -> None:
    ids = enqueue(chaos_dsn, n)
    procs = [spawn_worker("tests.apps.ledger:app", chaos_dsn, *WORKER_ARGS) for _ in range(4)]
    try:
        drain(chaos_dsn, ids, timeout=60 + n / 100)
        # A stop is graceful from start-up on: one that reaches a worker still importing
        # (the backlog can drain before the fourth is up) ends it by the signal (-15).
        with psycopg.connect(chaos_dsn, autocommit=True) as conn:
            wait_until(lambda: started_workers(conn) == 4, 60, "four workers to start")
    finally:
        codes = stop_all(procs)
    assert codes == [0, 0, 0, 0]
    assert check(chaos_dsn, ids) == Damage(0, 0, 0, 0)


@pytest.mark.parametrize("n", SIZES)
def test_sigkill_a_worker_every_two_seconds(chaos_dsn: str, n: int) -> None:
    # The short tier drains in about a second: kill four times as often so it still kills.
    interval = 2.0 if n == FULL else 0.5
    ids = enqueue(chaos_dsn, n)
    procs = [spawn_worker("tests.apps.ledger:app", chaos_dsn, *WORKER_ARGS) for _ in range(4)]
    app = pgqueue.App(chaos_dsn)
    kills = 0
    deadline = time.monotonic() + 120 + n / 50
    try:
        while app.unfinished(ids) > 0:
            assert time.monotonic() < deadline, "drain did not finish"
            time.sleep(interval)
            if app.unfinished(ids) == 0:
                break
            victim = random.randrange(len(procs))
            procs[victim].kill()
            procs[victim].communicate()
            kills += 1
            procs[victim] = spawn_worker("tests.apps.ledger:app", chaos_dsn, *WORKER_ARGS)
    finally:
        stop_all(procs)
    damage = check(chaos_dsn, ids)
    assert (damage.lost, damage.duplicate_successes, damage.running) == (0, 0, 0)
    assert kills >= 1
    # A killed worker loses at most its running jobs and the outcomes waiting for the next
    # batched write, each bounded by its concurrency (8): only those run again.
    assert damage.re_executions <= kills * 2 * 8
    print(f"\nchaos sigkill n={n}: kills={kills} {damage}")


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize(
    "mode",
    [
        "fast",
        # A crash: unflushed WAL is gone, which is what an asynchronously committed claim
        # risks. Its job must run again, and no recorded outcome may be lost.
        "immediate",
    ],
)
def test_postgres_restarts_mid_drain(
    cluster: LocalCluster, chaos_dsn: str, n: int, mode: str
) -> None:
    ids = enqueue(chaos_dsn, n)
    args = [*WORKER_ARGS[:-4], "--heartbeat-timeout", "10", "--shutdown-grace", "5"]
    procs = [spawn_worker("tests.apps.ledger:app", chaos_dsn, *args) for _ in range(4)]
    app = pgqueue.App(chaos_dsn)
    recoveries = []
    try:
        # A worker that cannot reach the database while it starts exits (by design), so the
        # first restart waits until all four have started: registered, and heartbeating,
        # which begins only once start-up is over (a worker restarted into while still
        # announcing its tasks exited, and the test read it as a worker that died).
        with psycopg.connect(chaos_dsn, autocommit=True) as conn:
            wait_until(lambda: started_workers(conn) == 4, 60, "four workers to start")
        for fraction in (0.3, 0.6, 0.9):
            wait_until(
                lambda f=fraction: app.unfinished(ids) <= n * (1 - f),  # type: ignore[misc]
                60 + n / 100,
                f"{fraction:.0%} done",
            )
            app.close()  # our own pool is about to lose its connections too
            cluster.restart(mode)
            restarted = time.monotonic()
            # Recovery is shown by jobs enqueued after the restart completing: the backlog
            # alone cannot show it, since the last tenth may have drained before the
            # server went down (then nothing is left to make progress on).
            probe = enqueue(chaos_dsn, 10)
            ids.extend(probe)
            wait_until(
                lambda p=probe: app.unfinished(p) == 0,  # type: ignore[misc]
                60,
                "jobs enqueued after the restart to complete",
            )
            recoveries.append(round(time.monotonic() - restarted, 2))
        drain(chaos_dsn, ids, timeout=60 + n / 100)
        assert all(p.poll() is None for p in procs), "a worker process died"
    finally:
        codes = stop_all(procs)
    assert codes == [0, 0, 0, 0]
    damage = check(chaos_dsn, ids)
    assert (damage.lost, damage.duplicate_successes, damage.running) == (0, 0, 0)
    print(f"\nchaos restart ({mode}) n={n}: recovery seconds={recoveries} {damage}")


def _backends(conn: psycopg.Connection[Any], dbname: str) -> list[int]:
    """pgqueue workers' own backends (named by the worker) in this database."""
    return [
        r[0]
        for r in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend'"
            " AND application_name LIKE 'pgqueue worker %%'",
            [dbname],
        ).fetchall()
    ]


@pytest.mark.parametrize("n", SIZES)
def test_terminate_random_backends(cluster: LocalCluster, chaos_dsn: str, n: int) -> None:
    dbname = psycopg.conninfo.conninfo_to_dict(chaos_dsn)["dbname"]
    procs = [spawn_worker("tests.apps.ledger:app", chaos_dsn, *WORKER_ARGS) for _ in range(4)]
    admin = psycopg.connect(cluster.dsn, autocommit=True)
    # Every worker has its pool and its listener up (a pool's first connection plus a
    # listener each) before faults start.
    wait_until(lambda: len(_backends(admin, str(dbname))) >= 8, 60, "4 workers connected")
    ids = enqueue(chaos_dsn, n)
    app = pgqueue.App(chaos_dsn)
    try:
        # pgqueue's own connections (the task's are its own business): each worker process
        # holds at most its pool's 3 plus one listener, so above 4 x 4 can only be a leak.
        baseline = max(len(_backends(admin, str(dbname))) for _ in range(10))
        assert 4 <= baseline <= 16
        terminated = 0
        deadline = time.monotonic() + 120 + n / 50
        while app.unfinished(ids) > 0:
            assert time.monotonic() < deadline, "drain did not finish"
            backends = _backends(admin, str(dbname))
            if backends:
                admin.execute("SELECT pg_terminate_backend(%s)", [random.choice(backends)])
                terminated += 1
            time.sleep(0.5)
        app.close()
        # No leak: once the faults stop, the count settles within the same bound, with every
        # worker's listener back.
        wait_until(
            lambda: 4 <= len(_backends(admin, str(dbname))) <= 16,
            30,
            "pgqueue connections back within 4..16",
        )
    finally:
        codes = stop_all(procs)
        admin.close()
    assert codes == [0, 0, 0, 0]
    damage = check(chaos_dsn, ids)
    assert (damage.lost, damage.duplicate_successes, damage.running) == (0, 0, 0)
    print(f"\nchaos terminate n={n}: terminated={terminated} {damage}")


@pytest.mark.parametrize("n", SIZES)
def test_poison_mixed_into_normal_work(chaos_dsn: str, n: int) -> None:
    ids = enqueue(chaos_dsn, n)
    app = pgqueue.App(chaos_dsn)
    poison = app.enqueue("ledger.poison", {}).id
    args = [*WORKER_ARGS, "--max-rescues", "2"]
    procs = [spawn_worker("tests.apps.ledger:app", chaos_dsn, *args) for _ in range(2)]
    deadline = time.monotonic() + 120 + n / 50
    restarts = 0
    try:
        while app.unfinished([*ids, poison]) > 0:
            assert time.monotonic() < deadline, "drain did not finish"
            for i, proc in enumerate(procs):
                if proc.poll() is not None:  # a supervisor restarts what the poison killed
                    restarts += 1
                    procs[i] = spawn_worker("tests.apps.ledger:app", chaos_dsn, *args)
            time.sleep(0.1)
    finally:
        stop_all(procs)
    info = app.get_job(poison)
    assert info.state is pgqueue.JobState.FAILED and "poison job" in info.errors[-1]["message"]
    assert info.rescue_count == 3
    # Three charged deaths (max_rescues 2, failed on the third), plus at most one that was
    # not: claimed into a buffer behind the backlog, the poison may start and kill its
    # process before its start is recorded; its rescue then charges nothing but marks it
    # maybe_started, so every later claim records its start at once.
    assert 3 <= restarts <= 4
    damage = check(chaos_dsn, ids)
    assert (damage.lost, damage.duplicate_successes, damage.running) == (0, 0, 0)


@pytest.mark.parametrize("n", SIZES)
def test_tiny_pool_and_tasks_with_their_own_connections(chaos_dsn: str, n: int) -> None:
    """Concurrency 32 over a worker pool of 3, each task opening a connection of its own."""
    ids = enqueue(chaos_dsn, n)
    proc = spawn_worker("tests.apps.ledger:app", chaos_dsn, "-c", "32", "--poll-interval", "0.2")
    try:
        drain(chaos_dsn, ids, timeout=60 + n / 100)
    finally:
        codes = stop_all([proc])
    assert codes == [0]
    assert check(chaos_dsn, ids) == Damage(0, 0, 0, 0)


def test_checker_detects_damage(chaos_dsn: str) -> None:
    """The checker itself can fail: a lost job, a re-execution and a stuck row are counted."""
    ids = enqueue(chaos_dsn, 3)
    with psycopg.connect(chaos_dsn, autocommit=True) as conn:
        conn.execute("UPDATE pgqueue.jobs SET state = 'completed' WHERE id = %s", [ids[0]])
        conn.execute("UPDATE pgqueue.jobs SET state = 'running' WHERE id = %s", [ids[1]])
        conn.execute("INSERT INTO ledger VALUES (%s, 0, 1), (%s, 0, 2)", [ids[0], ids[0]])
        conn.execute("UPDATE pgqueue.jobs SET state = 'available' WHERE id = %s", [ids[0]])
        conn.execute("UPDATE pgqueue.jobs SET state = 'completed' WHERE id = %s", [ids[0]])
    assert check(chaos_dsn, ids) == Damage(
        lost=2, duplicate_successes=1, re_executions=1, running=1
    )
