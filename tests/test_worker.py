"""The worker against a real database: results, retries, errors, priorities, wake-ups."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue.testing import drain
from tests.helpers import wait_until, worker_thread

FAST = pgqueue.RetryPolicy(base=0.05, factor=2, max_delay=0.2, jitter=0)


def states(db: psycopg.Connection[Any]) -> dict[str, int]:
    return dict(db.execute("SELECT state, count(*) FROM pgqueue.job_status GROUP BY 1").fetchall())


def test_sync_and_async_tasks_store_their_results(app: pgqueue.App, db: Any) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    @app.task
    async def shout(word: str) -> dict[str, str]:
        await asyncio.sleep(0.01)
        return {"word": word.upper()}

    j1, j2 = add.enqueue(a=2, b=3), shout.enqueue(word="hi")
    with worker_thread(app, burst=True):
        pass
    assert j1.wait(timeout=5) == 5
    assert j2.wait(timeout=5) == {"word": "HI"}
    info = app.get_job(j1.id)
    assert (info.state, info.attempt, info.result) == (pgqueue.JobState.COMPLETED, 1, 5)
    assert info.started_at and info.finished_at and info.finished_at >= info.started_at
    row = db.execute(
        "SELECT state, result, worker FROM pgqueue.job_status WHERE id = %s", [j1.id]
    ).fetchone()
    assert row[0] == "completed" and row[1] == 5 and row[2]


def test_failures_retry_with_backoff_then_fail(app: pgqueue.App, db: Any) -> None:
    @app.task(max_attempts=3, retry=FAST)
    def broken() -> None:
        raise RuntimeError("upstream said no")

    job = broken.enqueue()
    with worker_thread(app, poll_interval=0.05):
        wait_until(lambda: app.get_job(job.id).state is pgqueue.JobState.FAILED, 15, "failed")
    info = app.get_job(job.id)
    assert info.attempt == 3
    assert [e["attempt"] for e in info.errors] == [1, 2, 3]
    assert {e["type"] for e in info.errors} == {"RuntimeError"}
    assert "upstream said no" in info.errors[-1]["message"]
    assert "raise RuntimeError" in info.errors[-1]["traceback"]
    last_error = db.execute("SELECT last_error FROM pgqueue.job_status").fetchone()
    assert last_error == ("RuntimeError: upstream said no",)
    with pytest.raises(pgqueue.JobFailed, match="upstream said no") as caught:
        job.wait(timeout=1)
    assert caught.value.state == "failed"


def test_retry_waits_out_its_backoff(app: pgqueue.App, db: Any) -> None:
    @app.task(max_attempts=2, retry=pgqueue.RetryPolicy(base=30, jitter=0))
    def once() -> None:
        raise ValueError("later")

    job = once.enqueue()
    with worker_thread(app, poll_interval=0.05):
        wait_until(lambda: app.get_job(job.id).state is pgqueue.JobState.RETRYING, 10, "retry")
        time.sleep(0.5)  # several polls: it must not be claimed before its run_at
        assert app.get_job(job.id).attempt == 1
    row = db.execute("SELECT run_at - now() FROM pgqueue.jobs").fetchone()
    assert row[0].total_seconds() > 25


def test_unknown_task_is_a_failed_attempt_and_the_worker_goes_on(app: pgqueue.App, db: Any) -> None:
    @app.task
    def fine() -> str:
        return "ok"

    stranger = app.enqueue("nobody.knows", {}, max_attempts=1)
    ok = fine.enqueue()
    with worker_thread(app, burst=True):
        pass
    info = app.get_job(stranger.id)
    assert info.state is pgqueue.JobState.FAILED
    assert info.errors[0]["type"] == "UnknownTask"
    assert ok.wait(timeout=5) == "ok"


def test_arguments_that_no_longer_match_fail_cleanly(app: pgqueue.App) -> None:
    @app.task(max_attempts=1)
    def greet(name: str) -> str:
        return name

    job = app.enqueue(greet.name, {"name": "x"})
    # The row changes under the task (a deploy renamed the argument):
    with psycopg.connect(app.dsn, autocommit=True) as conn:
        conn.execute('UPDATE pgqueue.jobs SET args = \'{"nom": "x"}\'')
    with worker_thread(app, burst=True):
        pass
    info = app.get_job(job.id)
    assert info.state is pgqueue.JobState.FAILED
    assert info.errors[0]["type"] == "TypeError" and "nom" in info.errors[0]["message"]


def test_result_that_is_not_json_fails_without_retry(app: pgqueue.App) -> None:
    @app.task(max_attempts=5)
    def weird() -> object:
        return object()

    job = weird.enqueue()
    with worker_thread(app, burst=True):
        pass
    info = app.get_job(job.id)
    assert (info.state, info.attempt) == (pgqueue.JobState.FAILED, 1)
    assert info.errors[0]["type"] == "ValidationError"


def test_async_timeout_cancels_and_retries(app: pgqueue.App) -> None:
    cancelled = threading.Event()

    @app.task(timeout=0.2, max_attempts=2, retry=FAST)
    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    job = slow.enqueue()
    with worker_thread(app, poll_interval=0.05):
        wait_until(lambda: app.get_job(job.id).state is pgqueue.JobState.FAILED, 10, "timeouts")
    info = app.get_job(job.id)
    assert cancelled.is_set()
    assert [e["type"] for e in info.errors] == ["JobTimeout", "JobTimeout"]
    assert info.errors[0]["kind"] == "timeout"


def test_concurrency_is_bounded(app: pgqueue.App) -> None:
    lock = threading.Lock()
    running = [0]
    peak = [0]

    @app.task
    def busy() -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1

    busy.enqueue_many({} for _ in range(40))
    with worker_thread(app, concurrency=4, burst=True):
        pass
    assert peak[0] == 4


def test_higher_priority_first_then_fifo(app: pgqueue.App) -> None:
    order: list[int] = []

    @app.task
    def mark(n: int) -> None:
        order.append(n)

    for n in range(5):
        mark.options(priority=0).enqueue(n=n)
    for n in range(10, 13):
        mark.options(priority=5).enqueue(n=n)
    mark.options(priority=-1).enqueue(n=99)
    with worker_thread(app, concurrency=1, burst=True):
        pass
    assert order == [10, 11, 12, 0, 1, 2, 3, 4, 99]


def test_higher_priority_job_overtakes_a_busy_backlog(app: pgqueue.App, db: Any) -> None:
    """Claims continue after the previous claim's last row (cheap while the xmin horizon is
    pinned), but go back to the front of the claim order every `cursor_ttl` seconds: a job
    that sorts first starts within that time, not after the whole backlog."""

    @app.task
    def slow(n: int) -> None:
        time.sleep(0.001)

    slow.enqueue_many({"n": n} for n in range(3000))
    worker = app.worker(concurrency=2, burst=True, handle_signals=False)
    worker.producer.cursor.ttl = 0.3
    with worker_thread(app, worker):
        wait_until(lambda: worker.stats["claimed"] >= 100, 30, "the backlog under way")
        urgent = slow.options(priority=5).enqueue(n=-1)
        urgent.wait(timeout=30)
    row = db.execute(
        "SELECT extract(epoch FROM u.started_at - u.created_at),"
        "       (SELECT count(*) FROM pgqueue.jobs b"
        "         WHERE b.priority = 0 AND b.started_at > u.started_at)"
        "  FROM pgqueue.jobs u WHERE u.id = %s",
        [urgent.id],
    ).fetchone()
    assert row is not None
    waited, overtaken = float(row[0]), int(row[1])
    assert overtaken > 0, "the urgent job ran only after the whole backlog"
    assert waited < 0.3 + 1.0, waited


def test_an_idle_worker_picks_up_each_new_job_with_one_claim(app: pgqueue.App) -> None:
    """Jobs arriving one at a time at an idle worker: each pickup is one claim statement. A
    claim that continued after the previous pickup's job would find the new one, run dry,
    and claim again from the front before the job could start (every other pickup paid that
    second round trip)."""

    @app.task(name="pickup.one")
    def one() -> None: ...

    worker = app.worker(concurrency=10, poll_interval=30, handle_signals=False)
    claims: list[tuple[int, int]] = []  # (jobs asked for, jobs brought) of each job claim
    real = worker.db.claim

    async def counted(statement: Any, limit: int, done: Any, **kwargs: Any) -> Any:
        result = await real(statement, limit, done, **kwargs)
        if limit > 0 and not kwargs.get("suspects"):
            claims.append((limit, len(result.jobs)))
        return result

    worker.db.claim = counted  # type: ignore[method-assign]
    with worker_thread(app, worker):
        wait_until(lambda: worker.started, 10, "worker start")
        time.sleep(0.3)  # idle: the start-up claims are over
        del claims[:]
        for _ in range(20):
            one.enqueue().wait(timeout=15)
    empty = [c for c in claims if c[1] == 0]
    assert sum(brought for _, brought in claims) == 20
    assert len(empty) <= 1, claims


def test_buffered_jobs_keep_starting_while_a_claim_is_in_flight(app: pgqueue.App) -> None:
    """A backlog: the worker claims its next batch while jobs remain in its buffer, and those
    jobs run during the claim's round trip. (The Producer waited in the claim and started
    nothing until it returned: a no-op drain ran no job while its claims were out.)"""

    @app.task(name="backlog.short")
    def short(n: int) -> None:
        time.sleep(0.001)

    short.enqueue_many({"n": n} for n in range(600))
    worker = app.worker(concurrency=2, prefetch=40, burst=True, handle_signals=False)
    windows: list[tuple[float, float]] = []
    starts: list[float] = []
    real_claim, real_start = worker.db.claim, worker.executor.start

    async def slow_claim(statement: Any, limit: int, done: Any, **kwargs: Any) -> Any:
        sent = time.monotonic()
        await asyncio.sleep(0.03)  # a slow round trip
        result = await real_claim(statement, limit, done, **kwargs)
        if limit > 0:
            windows.append((sent, time.monotonic()))
        return result

    def start(job: Any) -> None:
        starts.append(time.monotonic())
        real_start(job)

    worker.db.claim = slow_claim  # type: ignore[method-assign]
    worker.executor.start = start  # type: ignore[method-assign]
    with worker_thread(app, worker):
        pass
    assert len(starts) == 600
    during = sum(any(a < t < b for a, b in windows) for t in starts)
    assert during >= 0.2 * len(starts), (during, len(windows))


def test_scheduled_jobs_never_start_early(app: pgqueue.App, db: Any) -> None:
    @app.task
    def tick() -> None: ...

    later = tick.options(delay=1.0).enqueue()
    now = tick.enqueue()
    with worker_thread(app, poll_interval=0.05):
        assert now.wait(timeout=5) is None
        assert app.get_job(later.id).state is pgqueue.JobState.SCHEDULED
        later.wait(timeout=10)
    row = db.execute(
        "SELECT started_at >= run_at FROM pgqueue.jobs WHERE id = %s", [later.id]
    ).fetchone()
    assert row == (True,)


def _start_latency(app: pgqueue.App, db: Any, **settings: Any) -> float:
    """Seconds (database clock) from commit to task start for one job on an idle worker."""

    @app.task(name="latency.probe")
    def probe() -> None: ...

    with worker_thread(app, **settings) as worker:
        wait_until(lambda: worker.started, 10, "worker start")
        time.sleep(0.3)  # idle: the startup poll is over, the listener is listening
        job = probe.enqueue()
        job.wait(timeout=15)
    row = db.execute(
        "SELECT extract(epoch FROM started_at - created_at) FROM pgqueue.jobs WHERE id = %s",
        [job.id],
    ).fetchone()
    return float(row[0])


def test_notify_wakes_an_idle_worker_well_before_its_poll(app: pgqueue.App, db: Any) -> None:
    latency = _start_latency(app, db, poll_interval=30)
    assert latency < 1.0  # 30 x faster than polling could be


def test_without_notify_polling_still_picks_jobs_up(app: pgqueue.App, db: Any) -> None:
    latency = _start_latency(app, db, poll_interval=0.5, listen=False)
    assert latency < 0.5 + 1.0


def test_burst_exits_when_nothing_is_due(app: pgqueue.App) -> None:
    @app.task
    def quick() -> None: ...

    quick.enqueue_many({} for _ in range(25))
    later = quick.options(delay=3600).enqueue()
    started = time.monotonic()
    with worker_thread(app, burst=True, poll_interval=30) as worker:
        pass
    assert time.monotonic() - started < 10
    assert worker.stats["completed"] == 25
    assert app.get_job(later.id).state is pgqueue.JobState.SCHEDULED


def test_worker_registers_and_marks_itself_stopped(app: pgqueue.App, db: Any) -> None:
    with worker_thread(app, poll_interval=0.1) as worker:
        wait_until(
            lambda: db.execute("SELECT count(*) FROM pgqueue.workers").fetchone()[0] == 1,
            10,
            "registration",
        )
    row = db.execute("SELECT id, stopped_at IS NOT NULL FROM pgqueue.workers").fetchone()
    assert row == (worker.id, True)


def test_cancel_and_retry(app: pgqueue.App) -> None:
    @app.task(max_attempts=1)
    def flaky(fail: bool) -> str:
        if fail:
            raise RuntimeError("boom")
        return "fine"

    waiting = flaky.options(delay=3600).enqueue(fail=False)
    assert app.cancel(waiting.id) is True
    assert app.get_job(waiting.id).state is pgqueue.JobState.CANCELLED
    assert app.cancel(waiting.id) is False
    with pytest.raises(pgqueue.JobFailed, match="cancelled"):
        waiting.wait(timeout=1)

    failing = flaky.enqueue(fail=True)
    with worker_thread(app, burst=True):
        pass
    assert app.get_job(failing.id).state is pgqueue.JobState.FAILED
    with psycopg.connect(app.dsn, autocommit=True) as listener:
        listener.execute("LISTEN pgqueue_jobs")
        assert app.retry(failing.id) is True
        # The retry wakes the queue's workers itself, at commit.
        assert [n.payload for n in listener.notifies(timeout=2, stop_after=1)] == ["default"]
    info = app.get_job(failing.id)
    assert (info.state, info.max_attempts) == (pgqueue.JobState.AVAILABLE, 2)


def test_wait_times_out_and_get_job_reports_missing(app: pgqueue.App) -> None:
    job = app.enqueue("never.run", {})
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        job.wait(timeout=0.3)
    assert time.monotonic() - started < 3
    with pytest.raises(pgqueue.JobNotFound):
        app.get_job(10**12)


def test_current_job_is_visible_to_the_task(app: pgqueue.App) -> None:
    @app.task(name="ctx.me")
    def me() -> dict[str, Any]:
        job = pgqueue.current_job()
        return {"id": job.id, "task": job.task, "attempt": job.attempt}

    job = me.enqueue()
    with worker_thread(app, burst=True):
        pass
    assert job.wait(timeout=5) == {"id": job.id, "task": "ctx.me", "attempt": 1}
    with pytest.raises(LookupError):
        pgqueue.current_job()


def test_app_on_a_callers_pool_uses_its_connection_options(dsn: str) -> None:
    """Options that live only in the pool's kwargs (here the database name) reach every
    connection pgqueue opens: enqueue, the worker's own pool and listener, and wait()."""
    from psycopg import conninfo
    from psycopg_pool import ConnectionPool

    params = conninfo.conninfo_to_dict(dsn)
    dbname = params.pop("dbname")
    pool = ConnectionPool(
        conninfo.make_conninfo("", **params),
        kwargs={"dbname": dbname},
        min_size=1,
        max_size=2,
        open=True,
    )
    try:
        app = pgqueue.App(pool=pool)

        @app.task(name="pool.echo")
        def echo(x: int) -> int:
            return x

        job = echo.enqueue(x=7)
        with worker_thread(app, burst=True):
            pass
        assert job.wait(timeout=10) == 7
    finally:
        pool.close()


def test_worker_refreshes_missing_planner_statistics(app: pgqueue.App, db: Any) -> None:
    """A bulk load that autovacuum has not caught up with (or never will, where it is off)
    must not leave the claim planned on no statistics."""
    db.execute("ALTER TABLE pgqueue.jobs SET (autovacuum_enabled = false)")  # as if it were off
    app.enqueue_many("stats.noop", [{}] * 3000)
    before = db.execute(
        "SELECT coalesce(last_analyze, last_autoanalyze) FROM pg_stat_user_tables"
        " WHERE relid = 'pgqueue.jobs'::regclass"
    ).fetchone()
    assert before == (None,)
    with worker_thread(app, queues=["nothing-here"], burst=True):
        pass
    row = db.execute(
        "SELECT last_analyze IS NOT NULL, reltuples FROM pg_stat_user_tables s"
        " JOIN pg_class c ON c.oid = s.relid WHERE relid = 'pgqueue.jobs'::regclass"
    ).fetchone()
    assert row is not None and row[0] is True and row[1] >= 3000


class CardDeclined(Exception):
    pass


def test_a_task_decides_its_retry_or_its_failure(app: pgqueue.App) -> None:
    """`Retry(after=)` sets the delay and spends an attempt; `Fail` and `fail_on` end the
    job `failed` at once, attempts left or not."""

    @app.task(name="decide.retry_after", max_attempts=5)
    def retry_after() -> None:
        raise pgqueue.Retry(after=120, reason="429 Too Many Requests")

    @app.task(name="decide.fail", max_attempts=5)
    def fail_now() -> None:
        raise pgqueue.Fail("order deleted")

    @app.task(name="decide.declined", max_attempts=5, fail_on=(CardDeclined,))
    def declined() -> None:
        raise CardDeclined("card 4242 declined")

    @app.task(name="decide.other", max_attempts=5, fail_on=(CardDeclined,))
    def other() -> None:
        raise RuntimeError("flaky")

    jobs = [t.enqueue() for t in (retry_after, fail_now, declined, other)]
    drain(app)
    infos = [app.get_job(j.id) for j in jobs]
    assert [i.state for i in infos] == [
        pgqueue.JobState.RETRYING,
        pgqueue.JobState.FAILED,
        pgqueue.JobState.FAILED,
        pgqueue.JobState.RETRYING,
    ]
    assert all(i.attempt == 1 for i in infos)
    assert infos[0].errors[0]["kind"] == "retry"
    assert infos[0].errors[0]["message"] == "429 Too Many Requests"
    assert infos[0].run_at is not None and infos[0].errors[0]["at"]
    delay = (infos[0].run_at - infos[0].created_at).total_seconds()
    assert 119 < delay < 130  # the task's own delay, not the policy's 2 s backoff
    assert (infos[1].errors[0]["type"], infos[1].errors[0]["kind"]) == ("Fail", "fail")
    assert (infos[2].errors[0]["type"], infos[2].errors[0]["kind"]) == ("CardDeclined", "fail")
    assert infos[3].errors[0]["kind"] == "error"
    with pytest.raises(pgqueue.ValidationError):
        app.task(name="decide.bad", fail_on=("not an exception",))(lambda: None)  # type: ignore[arg-type]


def test_a_service_that_dies_of_a_bug_stops_the_worker_with_its_error(
    app: pgqueue.App, db: Any
) -> None:
    """A background task that ends by an error other than a database error (a bug) must not
    leave the worker claiming on without it: the worker stops as at any stop, writing what
    it ran, and raises that error, so its process fails and a supervisor restarts it."""

    @app.task(name="svc.ok")
    def ok() -> None: ...

    job = ok.enqueue()
    worker = app.worker(poll_interval=0.1, heartbeat_interval=0.1, handle_signals=False)
    beats = 0

    async def broken_beat() -> None:
        nonlocal beats
        beats += 1
        if beats == 3:
            raise RuntimeError("a bug in the heartbeat")

    worker.heartbeat.run_once = broken_beat  # type: ignore[method-assign]
    with (
        pytest.raises(RuntimeError, match="a bug in the heartbeat"),
        worker_thread(app, worker=worker),
    ):
        wait_until(lambda: worker.finished, 20, "the worker to stop by itself")
    assert app.get_job(job.id).state == "completed"
    row = db.execute("SELECT id, stopped_at IS NOT NULL FROM pgqueue.workers").fetchone()
    assert row == (worker.id, True)


def test_an_event_subscriber_that_raises_does_not_stall_the_worker(app: pgqueue.App) -> None:
    """Observers (metrics, tracing, a user's hook) see events from the statement path: one
    that raises is logged and skipped, and every outcome is still written."""

    @app.task(name="svc.noop")
    def noop(i: int) -> None: ...

    noop.enqueue_many({"i": i} for i in range(200))
    worker = app.worker(concurrency=8, burst=True, handle_signals=False)
    seen = 0

    def broken(event: object) -> None:
        nonlocal seen
        seen += 1
        raise ValueError("an observer's bug")

    worker.events.subscribe(broken)
    with worker_thread(app, worker=worker):
        pass
    assert worker.stats["completed"] == 200 and seen > 0
    assert app.count_unfinished() == 0


def test_burst_claims_again_after_a_write_that_landed_during_its_claim(app: pgqueue.App) -> None:
    """The completer may write a child's success while the producer's claim is in the
    database. That write wakes the parent, which the claim's snapshot cannot see: a burst
    worker must claim again rather than exit with the parent `available`. The seams hold
    the write back until a claim has run, and that claim's return until the write is in."""

    @app.task(name="burst.child")
    def child() -> int:
        return 7

    @app.task(name="burst.parent")
    def parent() -> int:
        ctx = pgqueue.current_job()
        return int(ctx.gather([ctx.spawn(child)])[0])

    job = parent.enqueue()
    worker = app.worker(burst=True, handle_signals=False, poll_interval=30, concurrency=2)
    claim, write = worker.producer.claim, worker.completer.write
    held, released, written = threading.Event(), threading.Event(), threading.Event()

    def child_done(batch: list[Any]) -> bool:
        return any(o.job.task == "burst.child" for o in batch)

    async def held_write(batch: list[Any]) -> None:
        if child_done(batch):
            held.set()
            await asyncio.get_running_loop().run_in_executor(None, released.wait, 10)
        await write(batch)
        if child_done(batch):
            written.set()

    async def claim_then_let_the_write_in(limit: int, *, suspects: bool = False) -> list[Any]:
        jobs = await claim(limit, suspects=suspects)
        if held.is_set() and not released.is_set():
            released.set()
            await asyncio.get_running_loop().run_in_executor(None, written.wait, 10)
        return jobs

    worker.completer.take_successes = lambda: []  # type: ignore[method-assign]
    worker.completer.write = held_write  # type: ignore[method-assign]
    worker.producer.claim = claim_then_let_the_write_in  # type: ignore[method-assign]
    with worker_thread(app, worker=worker):
        pass
    assert released.is_set() and written.is_set()  # the race did happen
    assert app.get_job(job.id).state is pgqueue.JobState.COMPLETED
    assert job.wait(timeout=1) == 7
