"""Issue 11's sharp edges, each reproduced: what a careless input or a busy process got wrong,
and now gets right."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

import pgqueue
import pgqueue.testing
from pgqueue.testing import worker_thread
from tests.helpers import wait_until


def _backends(db: psycopg.Connection[Any], *, workers: bool = True) -> int:
    """Backends on the test's database but this one; `workers=False` leaves out the worker's
    own connections (its pool grows and shrinks with its services, whatever waiters do)."""
    row = db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid()"
        " AND (%s OR application_name NOT LIKE 'pgqueue worker %%')",
        [workers],
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_many_waiters_share_one_listening_connection(app: pgqueue.App, db: Any) -> None:
    gate = threading.Event()

    @app.task(name="edges.gated")
    def gated(i: int) -> int:
        gate.wait(30)
        return i

    jobs = gated.enqueue_many({"i": i} for i in range(20))
    results: dict[int, Any] = {}
    before = _backends(db)
    listeners: list[bool] = []
    connect = app.database.connect

    def counted(*, listen: bool = False) -> Any:
        listeners.append(listen)
        return connect(listen=listen)

    app.database.connect = counted  # type: ignore[method-assign]

    def wait(job: pgqueue.Job) -> None:
        results[job.id] = job.wait(timeout=30)

    async def wait_async(job: pgqueue.Job) -> None:
        results[job.id] = await job.wait_async(timeout=30)

    threads = [threading.Thread(target=wait, args=(j,)) for j in jobs[:15]]
    for t in threads:
        t.start()
    async_side = threading.Thread(
        target=lambda: asyncio.run(_gather(wait_async(j) for j in jobs[15:]))
    )
    async_side.start()
    wait_until(lambda: app.client._listener is not None, 10, "the listener")
    waiting_backends = _backends(db)
    # One listener, plus at most the App's pools (8 sync + 8 async) for the re-reads; the
    # old code opened one connection per waiter (20 here).
    assert waiting_backends - before <= 1 + 8 + 8
    with worker_thread(app, concurrency=20, poll_interval=0.1):
        gate.set()
        for t in threads:
            t.join(30)
        async_side.join(30)
    assert results == {j.id: i for i, j in enumerate(jobs)}
    assert listeners == [True]  # one LISTEN connection for all twenty waiters, no other
    app.close()
    wait_until(lambda: _backends(db) <= before, 10, "every connection closed")


async def _gather(coros: Any) -> None:
    await asyncio.gather(*coros)


def test_waits_open_no_connection_per_waiter(app: pgqueue.App, db: Any) -> None:
    """Twenty sequential waits from one thread: the backend count stays flat."""

    @app.task(name="edges.quick")
    def quick() -> None: ...

    with worker_thread(app, poll_interval=0.1):
        quick.enqueue().wait(timeout=10)  # the listener and the pool are open now
        settled = _backends(db, workers=False)
        opened: list[str] = []
        connect = app.database.connect

        def counted(*, listen: bool = False) -> Any:
            opened.append("listen" if listen else "plain")
            return connect(listen=listen)

        app.database.connect = counted  # type: ignore[method-assign]
        for _ in range(20):
            quick.enqueue().wait(timeout=10)
        assert opened == []  # the old code opened (and closed) one per wait
        assert _backends(db, workers=False) <= settled


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"metrics_port": 70000}, "metrics_port must be 1-65535"),
        ({"metrics_port": -1}, "metrics_port must be at least 1"),
        ({"metrics_addr": "256.1.1.1"}, "not a valid IP address"),
        ({"metrics_addr": "bad host!"}, "not a valid IP address or host name"),
        ({"concurrency": 100_000}, "more than one process can run"),
    ],
)
def test_worker_settings_are_refused_with_one_clear_error(
    app: pgqueue.App, settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(pgqueue.ValidationError, match=message):
        app.worker(**settings)


def test_metrics_bind_loopback_by_default(app: pgqueue.App) -> None:
    assert app.worker().settings.metrics_addr == "127.0.0.1"


def test_metrics_port_in_use_is_a_configuration_error(app: pgqueue.App) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = app.worker(metrics_port=port, handle_signals=False, burst=True)
        with pytest.raises(pgqueue.ConfigurationError, match=f"cannot serve metrics on .*:{port}"):
            asyncio.run(worker.run())


def test_log_level_is_checked_and_only_pgqueue_is_turned_up() -> None:
    with pytest.raises(pgqueue.ValidationError, match="unknown log level"):
        pgqueue.configure_logging("LOUD")
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        pgqueue.configure_logging("INFO")
        assert logging.getLogger("pgqueue.worker").isEnabledFor(logging.INFO)
        assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        logging.getLogger("pgqueue").setLevel(logging.NOTSET)


def test_wrong_connection_kinds_say_what_was_expected(app: pgqueue.App, dsn: str) -> None:
    @app.task(name="edges.any")
    def anything() -> None: ...

    async def async_conn_to_sync() -> None:
        aconn = await psycopg.AsyncConnection.connect(dsn)
        async with aconn:
            with pytest.raises(pgqueue.ValidationError, match="use enqueue_async"):
                anything.options(conn=aconn).enqueue()

    asyncio.run(async_conn_to_sync())
    with (
        psycopg.connect(dsn) as conn,
        pytest.raises(pgqueue.ValidationError, match="use the sync methods"),
    ):
        asyncio.run(anything.options(conn=conn).enqueue_async())
    with pytest.raises(pgqueue.ValidationError, match="got str"):
        anything.options(conn="postgresql://nope").enqueue()
    with pytest.raises(pgqueue.ValidationError, match="got object"):
        anything.options(session=object()).enqueue()
    engine = create_engine(dsn.replace("postgresql://", "postgresql+psycopg://"))
    with Session(engine) as session, pytest.raises(pgqueue.ValidationError, match="Async"):
        asyncio.run(anything.options(session=session).enqueue_async())
    engine.dispose()


def test_enqueue_on_a_callers_connection_to_an_unmigrated_database(empty_dsn: str) -> None:
    app = pgqueue.App(empty_dsn)

    @app.task(name="edges.none")
    def nothing() -> None: ...

    with psycopg.connect(empty_dsn) as conn:
        with pytest.raises(pgqueue.SchemaNotMigrated, match="pgqueue migrate"):
            nothing.options(conn=conn).enqueue()
        conn.execute("SELECT 1")  # the caller's transaction was not aborted by us
    app.close()


def test_a_worker_against_an_unreachable_server_fails_at_once_with_the_reason() -> None:
    app = pgqueue.App("postgresql://nobody@127.0.0.1:1/nothing?connect_timeout=2")
    worker = app.worker(handle_signals=False)
    with pytest.raises(psycopg.OperationalError, match=r"127\.0\.0\.1"):
        asyncio.run(asyncio.wait_for(worker.run(), 10))


def test_stuck_jobs_label_a_young_retried_or_rescued_run_by_its_history(
    app: pgqueue.App, db: Any
) -> None:
    retried, rescued, overdue = (app.enqueue("x.y", {}).id for _ in range(3))
    db.execute(
        "UPDATE pgqueue.jobs SET state = 'running', attempt = 3, timeout = 600,"
        " started_at = now() - interval '2 seconds' WHERE id = %s",
        [retried],
    )
    db.execute(
        "UPDATE pgqueue.jobs SET state = 'running', attempt = 2, rescue_count = 1,"
        " started_at = now() - interval '2 seconds' WHERE id = %s",
        [rescued],
    )
    db.execute(
        "UPDATE pgqueue.jobs SET state = 'running', attempt = 3, timeout = 1,"
        " started_at = now() - interval '2 seconds' WHERE id = %s",
        [overdue],
    )
    rows = {r["id"]: r["bucket"] for r in app.stuck_jobs()}
    assert rows == {retried: "retried 2x", rescued: "rescued 1x", overdue: "over timeout"}
    assert app.count_stuck() == 3


def test_exclude_queue_serves_every_other_queue_including_new_ones(app: pgqueue.App) -> None:
    ran: list[str] = []

    @app.task(name="edges.where")
    def where(queue: str) -> None:
        ran.append(queue)

    for queue in ("crm", "mail", "later-added"):
        where.options(queue=queue).enqueue(queue=queue)
    pgqueue.testing.drain(app, exclude_queues=["crm"])
    assert sorted(ran) == ["later-added", "mail"]
    assert app.get_job(app.list_jobs(queue="crm")[0]["id"]).state is pgqueue.JobState.AVAILABLE
    with pytest.raises(pgqueue.ValidationError, match="not both"):
        app.worker(queues=["mail"], exclude_queues=["crm"])


def test_exclude_queue_worker_ignores_notifications_of_excluded_queues(app: pgqueue.App) -> None:
    seen: list[str] = []

    @app.task(name="edges.seen")
    def mark(queue: str) -> None:
        seen.append(queue)

    with worker_thread(app, exclude_queues=["crm"], poll_interval=30) as worker:
        wait_until(lambda: worker.started, 10, "start")
        mark.options(queue="crm").enqueue(queue="crm")
        mark.options(queue="mail").enqueue(queue="mail").wait(timeout=10)  # by NOTIFY, not poll
    assert seen == ["mail"]


def test_a_worker_names_a_queue_nothing_uses(
    app: pgqueue.App, caplog: pytest.LogCaptureFixture
) -> None:
    app.enqueue("edges.x", {}, queue="emails")
    with caplog.at_level(logging.WARNING, logger="pgqueue.worker"):
        pgqueue.testing.drain(app, queues=["emails", "emials"])
    warned = [r.getMessage() for r in caplog.records if "is the name right" in r.getMessage()]
    assert warned == ["queue 'emials' has no waiting jobs and no settings: is the name right?"]


def test_asyncio_run_twice_never_hangs_at_loop_shutdown(app: pgqueue.App) -> None:
    """Each `asyncio.run` leaves its loop's connections behind (nobody awaited aclose); the
    loop must still shut down at once. With psycopg_pool's AsyncConnectionPool per loop,
    cancelling its tasks at shutdown hung the second run for good."""

    @app.task(name="edges.echo")
    def echo(i: int) -> int:
        return i

    with worker_thread(app, poll_interval=0.1):
        for round_ in range(6):
            jobs = echo.enqueue_many({"i": i} for i in range(5))

            async def main(batch: list[pgqueue.Job] = jobs) -> list[Any]:
                return list(await asyncio.gather(*(j.wait_async(timeout=20) for j in batch)))

            box: list[Any] = []

            def run(out: list[Any] = box) -> None:
                out.append(asyncio.run(main()))

            runner = threading.Thread(target=run)
            runner.start()
            runner.join(20)
            assert not runner.is_alive(), f"asyncio.run hung at shutdown (round {round_})"
            assert box == [[0, 1, 2, 3, 4]]


def test_jobs_released_at_shutdown_are_counted(app: pgqueue.App) -> None:
    """A stop releases what never started (the prefetch buffer) and what outlived the grace
    period; `worker.stats["released"]` used to stay 0 for them, though the log said so."""
    started = threading.Event()

    @app.task(name="edges.hold")
    async def hold() -> None:
        started.set()
        await asyncio.sleep(60)

    jobs = hold.enqueue_many([{}] * 2)
    with worker_thread(app, concurrency=1, prefetch=1, shutdown_grace=0.2) as worker:
        assert started.wait(10)
        wait_until(lambda: worker.stats["claimed"] == 2, 10, "the second job prefetched")
    assert worker.stats["released"] == 2
    assert {app.get_job(j.id).state for j in jobs} == {pgqueue.JobState.AVAILABLE}
    assert {app.get_job(j.id).attempt for j in jobs} == {0}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--metrics-port", "70000"], "metrics_port must be 1-65535"),
        (["--metrics-port", "-1"], "metrics_port must be at least 1"),
        (["--metrics-addr", "256.1.1.1"], "not a valid IP address"),
        (["--log-level", "LOUD"], "unknown log level"),
        (["-c", "100000"], "more than one process can run"),
    ],
)
def test_worker_command_refuses_bad_settings_in_one_line(
    dsn: str, args: list[str], message: str
) -> None:
    import os
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "pgqueue.cli", "worker", "tests.apps.ledger:app", *args],
        env={**os.environ, "PGQUEUE_DSN": dsn},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
