"""The promises of DESIGN.md section 5, each proven against real processes and a real server.

Fencing, rescue after SIGKILL, poison jobs, leader replacement, the shutdown contract, and
reconnection after terminated backends.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from typing import Any

import psycopg
import pytest

import pgqueue
from tests.helpers import spawn_worker, wait_until, worker_thread

LEDGER = "CREATE TABLE ledger (job_id bigint NOT NULL, n int NOT NULL, pid int NOT NULL)"
FAST_HEARTBEAT = ["--heartbeat-interval", "0.2", "--heartbeat-timeout", "1.5"]


def scalar(db: psycopg.Connection[Any], query: str, *params: Any) -> Any:
    row = db.execute(query, params or None).fetchone()
    assert row is not None
    return row[0]


def paused_completer(worker: pgqueue.Worker, gate: threading.Event) -> pgqueue.Worker:
    """A worker frozen between 'the task returned' and 'its completion reached the database'
    for as long as the test needs: its outcome writes wait for a gate, and meanwhile it claims
    nothing more (as a worker cut off from the database could not). The seams are the
    Producer's claim and the Completer's write."""
    claim, write = worker.producer.claim, worker.completer.write

    async def gated_claim(limit: int, *, suspects: bool = False) -> list[Any]:
        if worker.stats["claimed"] and not gate.is_set():
            return []
        return await claim(limit, suspects=suspects)

    async def gated_write(batch: list[Any]) -> None:
        await asyncio.get_running_loop().run_in_executor(None, gate.wait, 60)
        await write(batch)

    worker.producer.claim = gated_claim  # type: ignore[method-assign]
    worker.completer.write = gated_write  # type: ignore[method-assign]
    return worker


def test_stale_worker_completion_changes_nothing(app: pgqueue.App, db: Any) -> None:
    returned = threading.Event()

    @app.task(name="fence.work")
    def work() -> dict[str, int]:
        returned.set()
        return {"attempt": pgqueue.current_job().attempt}

    job = work.enqueue()
    gate = threading.Event()
    stale = paused_completer(
        app.worker(
            heartbeat_interval=100, heartbeat_timeout=300, handle_signals=False, poll_interval=0.1
        ),
        gate,
    )
    with worker_thread(app, worker=stale):
        assert returned.wait(10)
        # The first worker is now presumed dead (its heartbeat is an hour old)...
        db.execute(
            "UPDATE pgqueue.workers SET heartbeat_at = now() - interval '1 hour' WHERE id = %s",
            [stale.id],
        )
        # ...so a live worker's leader rescues the job and runs it again.
        with worker_thread(
            app, poll_interval=0.1, heartbeat_interval=0.1, heartbeat_timeout=1.0
        ) as rescuer:
            wait_until(
                lambda: app.get_job(job.id).state is pgqueue.JobState.COMPLETED,
                20,
                "the re-claimed run to complete",
            )
        assert rescuer.stats["rescued"] == 1 and rescuer.stats["completed"] == 1
        gate.set()  # the first run's completion finally arrives
    assert stale.stats["stale"] == 1 and stale.stats["completed"] == 0
    info = app.get_job(job.id)
    assert info.state is pgqueue.JobState.COMPLETED
    assert info.result == {"attempt": 2}  # the re-claimed run's outcome is the one kept
    assert (info.attempt, info.rescue_count) == (2, 1)
    assert [e["type"] for e in info.errors] == ["WorkerLost"]


def test_sigkilled_workers_jobs_run_again(dsn: str, db: Any) -> None:
    db.execute(LEDGER)
    app = pgqueue.App(dsn)
    job = app.enqueue("ledger.sleep", {"seconds": 2})
    victim = spawn_worker("tests.apps.ledger:app", dsn, "--poll-interval", "0.1", *FAST_HEARTBEAT)
    wait_until(lambda: app.get_job(job.id).state is pgqueue.JobState.RUNNING, 20, "claim")
    victim.kill()
    victim.wait(10)
    assert app.get_job(job.id).state is pgqueue.JobState.RUNNING  # orphaned, for now
    killed_at = time.monotonic()
    survivor = spawn_worker("tests.apps.ledger:app", dsn, "--poll-interval", "0.1", *FAST_HEARTBEAT)
    try:
        wait_until(
            lambda: app.get_job(job.id).state is pgqueue.JobState.COMPLETED, 30, "rescue and re-run"
        )
    finally:
        survivor.send_signal(signal.SIGTERM)
        survivor.communicate(timeout=30)
    recovery = time.monotonic() - killed_at
    info = app.get_job(job.id)
    assert (info.attempt, info.rescue_count) == (2, 1)
    assert info.errors[0]["type"] == "WorkerLost"
    assert scalar(db, "SELECT count(*) FROM ledger") == 1  # the killed run never finished
    assert recovery < 15


def test_a_crash_does_not_stall_the_survivors(dsn: str, db: Any) -> None:
    """A worker dies holding long jobs: while the survivor reruns them, new work keeps
    flowing at its usual pace (a first rescue is not quarantined; only a job rescued twice,
    a likely killer, runs alone)."""
    db.execute(LEDGER)
    app = pgqueue.App(dsn)
    long = app.enqueue_many("ledger.sleep", [{"seconds": 6} for _ in range(4)])
    ids = [j.id for j in long]
    args = ["--poll-interval", "0.1", *FAST_HEARTBEAT]
    victim = spawn_worker("tests.apps.ledger:app", dsn, "-c", "4", *args)
    survivor = None
    try:
        wait_until(
            lambda: scalar(
                db, "SELECT count(*) FROM pgqueue.jobs WHERE state = 'running' AND id = ANY(%s)",
                ids,
            ) == 4,
            20,
            "the victim to run the long jobs",
        )  # fmt: skip
        survivor = spawn_worker("tests.apps.ledger:app", dsn, "-c", "8", *args)
        victim.kill()
        victim.wait(10)
        wait_until(
            lambda: scalar(
                db, "SELECT count(*) FROM pgqueue.jobs WHERE rescue_count = 1 AND id = ANY(%s)",
                ids,
            ) == 4,
            20,
            "the rescue",
        )  # fmt: skip
        quick = []
        deadline = time.monotonic() + 8  # the rescued jobs run for 6 s of this
        while time.monotonic() < deadline:
            quick.append(app.enqueue("ledger.record", {"n": len(quick)}).id)
            time.sleep(0.25)
        wait_until(lambda: app.unfinished(quick + ids) == 0, 30, "everything to finish")
    finally:
        victim.kill()
        if survivor is not None:
            survivor.send_signal(signal.SIGTERM)
            survivor.communicate(timeout=30)
    waits = [
        float(r[0])
        for r in db.execute(
            "SELECT extract(epoch FROM started_at - created_at) FROM pgqueue.jobs"
            " WHERE id = ANY(%s)",
            [quick],
        ).fetchall()
    ]
    assert len(waits) == len(quick) >= 20
    # With the rescued jobs quarantined one at a time, the quick jobs waited behind them for
    # seconds (the reported stall); now each starts about as soon as it is enqueued.
    # The bound leaves room for a loaded machine and still separates from a stall (each
    # rescued job runs for 6 s, so a quick job queued behind one waits that long).
    assert max(waits) < 4, sorted(waits)[-5:]
    for job_id in ids:
        info = app.get_job(job_id)
        assert (info.state, info.rescue_count) == (pgqueue.JobState.COMPLETED, 1)


def test_poison_job_fails_after_max_rescues_and_spares_the_rest(dsn: str, db: Any) -> None:
    db.execute(LEDGER)
    app = pgqueue.App(dsn)
    poison = app.enqueue("ledger.poison", {})
    normal = app.enqueue_many("ledger.record", [{"n": i} for i in range(50)])
    args = ["-c", "2", "--poll-interval", "0.1", "--max-rescues", "2", *FAST_HEARTBEAT]
    deadline = time.monotonic() + 90
    deaths = 0
    proc = spawn_worker("tests.apps.ledger:app", dsn, *args)
    try:
        while app.get_job(poison.id).state is not pgqueue.JobState.FAILED:
            assert time.monotonic() < deadline, "poison job never failed"
            if proc.poll() is not None:  # it took the worker down: a supervisor restarts it
                deaths += 1
                proc = spawn_worker("tests.apps.ledger:app", dsn, *args)
            time.sleep(0.05)
        wait_until(lambda: app.unfinished([j.id for j in normal]) == 0, 30, "normal jobs")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    info = app.get_job(poison.id)
    assert info.rescue_count == 3 and deaths == 3
    assert "poison job" in info.errors[-1]["message"]
    missing = db.execute(
        "SELECT id, state, attempt, rescue_count, errors FROM pgqueue.jobs"
        " WHERE task = 'ledger.record' AND id NOT IN (SELECT job_id FROM ledger)"
    ).fetchall()
    assert missing == []
    assert scalar(db, "SELECT count(DISTINCT job_id) FROM ledger") == 50


def test_killed_leader_is_replaced(dsn: str, db: Any) -> None:
    procs = [
        spawn_worker("tests.apps.ledger:app", dsn, "--poll-interval", "0.5", *FAST_HEARTBEAT)
        for _ in range(2)
    ]
    try:
        wait_until(
            lambda: db.execute("SELECT 1 FROM pgqueue.leaders").fetchone() is not None,
            20,
            "an election",
        )
        leader = scalar(
            db, "SELECT w.pid FROM pgqueue.leaders l JOIN pgqueue.workers w ON w.id = l.worker_id"
        )
        victim = next(p for p in procs if p.pid == leader)
        victim.kill()
        killed_at = time.monotonic()
        other = next(p for p in procs if p is not victim)
        wait_until(
            lambda: (
                db.execute(
                    "SELECT w.pid FROM pgqueue.leaders l"
                    " JOIN pgqueue.workers w ON w.id = l.worker_id"
                ).fetchone()
                == (other.pid,)
            ),
            15,
            "a new leader",
        )
        # Bounded: the lease (heartbeat timeout, 1.5 s) plus one heartbeat interval, give or take.
        assert time.monotonic() - killed_at < 5
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)


def test_double_sigterm_stops_at_once_and_releases_jobs(dsn: str, db: Any) -> None:
    db.execute(LEDGER)
    app = pgqueue.App(dsn)
    long = app.enqueue_many("ledger.sleep", [{"seconds": 60}, {"seconds": 60}])
    proc = spawn_worker("tests.apps.ledger:app", dsn, "-c", "2", "--poll-interval", "0.1")
    wait_until(
        lambda: (
            app.unfinished([j.id for j in long]) == 2
            and all(app.get_job(j.id).state is pgqueue.JobState.RUNNING for j in long)
        ),
        20,
        "both running",
    )
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert proc.poll() is None  # the first signal waits for the grace period
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert time.monotonic() - started < 5, out.decode()[-2000:]
    assert proc.returncode == 0, out.decode()[-2000:]
    for job in long:
        info = app.get_job(job.id)
        # Back in line, and the interrupted run did not use up an attempt.
        assert (info.state, info.attempt) == (pgqueue.JobState.AVAILABLE, 0)
    assert scalar(db, "SELECT count(*) FROM pgqueue.jobs WHERE state = 'running'") == 0


def test_grace_period_expiry_releases_unfinished_jobs(dsn: str, db: Any) -> None:
    db.execute(LEDGER)
    app = pgqueue.App(dsn)
    quick = app.enqueue("ledger.sleep", {"seconds": 0.3})
    slow = app.enqueue("ledger.sleep", {"seconds": 60})
    proc = spawn_worker(
        "tests.apps.ledger:app", dsn, "-c", "2", "--poll-interval", "0.1", "--shutdown-grace", "1.5"
    )
    wait_until(lambda: app.get_job(slow.id).state is pgqueue.JobState.RUNNING, 20, "start")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out.decode()[-2000:]
    assert app.get_job(quick.id).state is pgqueue.JobState.COMPLETED
    info = app.get_job(slow.id)
    assert (info.state, info.attempt) == (pgqueue.JobState.AVAILABLE, 0)


def test_overdue_sync_task_is_marked_keeps_its_slot_and_never_runs_twice(
    app: pgqueue.App,
) -> None:
    release = threading.Event()
    runs: list[int] = []
    ran_next = threading.Event()

    @app.task(name="stuck.sync", timeout=0.2, max_attempts=3)
    def stuck() -> str:
        runs.append(1)
        release.wait(20)
        return "late but done"

    @app.task(name="stuck.next")
    def following() -> None:
        ran_next.set()

    job = stuck.enqueue()
    with worker_thread(app, concurrency=1, prefetch=0, poll_interval=0.05) as worker:
        wait_until(lambda: worker.stats["overdue"] == 1, 10, "the timeout to pass")
        # Marked for the operator, still running (so nothing runs it a second time)...
        stuck_rows = {r["id"]: r for r in app.stuck_jobs()}
        assert stuck_rows[job.id]["bucket"] == "over timeout"
        assert stuck_rows[job.id]["worker_alive"] is True
        nxt = following.enqueue()
        time.sleep(0.5)
        # ...and the only slot stays with the thread that cannot be interrupted.
        assert not ran_next.is_set()
        assert app.get_job(job.id).state is pgqueue.JobState.RUNNING
        release.set()
        assert job.wait(timeout=10) == "late but done"  # its real outcome is recorded
        nxt.wait(timeout=10)
    assert runs == [1]
    assert app.get_job(job.id).attempt == 1


def pgqueue_backends(db: Any, dbname: str) -> list[int]:
    return [
        r[0]
        for r in db.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [dbname],
        ).fetchall()
    ]


def test_terminated_backends_are_replaced_and_nothing_is_lost(app: pgqueue.App, db: Any) -> None:
    done: list[int] = []

    @app.task(name="term.work")
    def work(n: int) -> None:
        done.append(n)

    dbname = db.info.dbname
    with worker_thread(
        app, poll_interval=30, heartbeat_interval=0.2, heartbeat_timeout=5
    ) as worker:
        wait_until(
            lambda: worker.stats["claimed"] == 0 and len(pgqueue_backends(db, dbname)) >= 2,
            10,
            "worker connections",
        )
        for pid in pgqueue_backends(db, dbname):
            db.execute("SELECT pg_terminate_backend(%s)", [pid])
        # The listener comes back by itself: a job enqueued now starts well before the 30 s
        # poll would have found it.
        wait_until(lambda: worker.stats["listener_rebuilds"] >= 1, 10, "listener rebuild")
        job = work.enqueue(n=1)
        job.wait(timeout=10)
        jobs = work.enqueue_many({"n": i} for i in range(2, 200))
        wait_until(lambda: app.unfinished([j.id for j in jobs]) == 0, 30, "drain")
    assert sorted(done) == list(range(1, 200))


@pytest.mark.parametrize("listen", [True, False])
def test_lost_claim_reply_leaves_no_orphan(app: pgqueue.App, db: Any, listen: bool) -> None:
    """A claim that committed but whose reply never arrived: the worker gives those rows back."""

    @app.task(name="orphan.work")
    def work() -> None: ...

    with worker_thread(app, poll_interval=0.1, listen=listen) as worker:
        wait_until(lambda: worker.started, 10, "start")
        # Simulate it: rows claimed under this worker's id that it never saw.
        job = work.options(delay=3600).enqueue()  # not claimable by the normal path
        db.execute(
            "UPDATE pgqueue.jobs SET state = 'running', attempt = 1, worker_id = %s,"
            " lease = gen_random_uuid(), run_at = now(), started_at = now() WHERE id = %s",
            [worker.id, job.id],
        )
        worker.producer.orphans_possible = True
        worker.producer.nudge()
        wait_until(
            lambda: app.get_job(job.id).state is pgqueue.JobState.COMPLETED,
            10,
            "orphan released and run",
        )
    assert app.get_job(job.id).attempt == 1
    assert worker.stats["released"] == 1


def deaf_listener(worker: pgqueue.Worker) -> pgqueue.Worker:
    """Its first LISTEN connection stays open but hears nothing: a half-open socket, as far
    as the worker can tell (the seam is the Notifier's receive)."""
    receive = worker.notifier.receive
    deafened: list[bool] = []

    async def deaf_receive(conn: psycopg.AsyncConnection[Any]) -> None:
        if not deafened:
            deafened.append(True)
            await conn.execute("UNLISTEN *")
        await receive(conn)

    worker.notifier.receive = deaf_receive  # type: ignore[method-assign]
    return worker


def test_silent_listener_is_detected_and_rebuilt(app: pgqueue.App, db: Any) -> None:
    @app.task(name="deaf.probe")
    def probe() -> None: ...

    worker = deaf_listener(
        app.worker(poll_interval=30, listener_check_interval=0.3, handle_signals=False)
    )
    with worker_thread(app, worker=worker):
        wait_until(lambda: worker.stats["listener_rebuilds"] >= 1, 10, "a rebuilt listener")
        time.sleep(0.2)
        job = probe.enqueue()
        job.wait(timeout=10)
    latency = scalar(db, "SELECT extract(epoch FROM started_at - created_at) FROM pgqueue.jobs")
    assert float(latency) < 2  # woken by NOTIFY again, not by the 30 s poll
