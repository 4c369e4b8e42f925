"""pgqueue behind a real PgBouncer in transaction mode (DESIGN.md section 13).

Every test uses its own database (the `dsn` fixture) both directly and through the
session's bouncer (`pgbouncer.dsn_for(dsn)`: the same database name). In transaction mode
each transaction may run on another server connection, and what a session leaves behind
(a prepared statement, a LISTEN, a SET, a session advisory lock) stays on the server
connection for whichever client gets it next. So besides what each test names, the tests
look at every server connection the bouncer holds for the database afterwards
(`PgBouncer.server_sessions`) and require it clean.

The API under test: `pgqueue.App(dsn, prepared_statements=False, listen_dsn=None)`,
`$PGQUEUE_PREPARED_STATEMENTS=0`, `$PGQUEUE_LISTEN_DSN`, and
`pgqueue worker APP --no-prepared-statements --listen-dsn DSN`.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
import sqlalchemy
from pgqueue.cli import app as cli
from psycopg import conninfo, errors
from sqlalchemy.orm import Session
from typer.testing import CliRunner

import pgqueue
from tests.helpers import WorkerProcess, spawn_worker, wait_until
from tests.pgbouncer import PgBouncer

APP = "tests.apps.bounced:app"
LEDGER = "CREATE TABLE ledger (job_id bigint NOT NULL, n int NOT NULL, pid int NOT NULL)"
ORDERS = "CREATE TABLE orders (id int PRIMARY KEY)"

#: What psycopg raises when its idea of a connection's prepared statements and the server
#: session's disagree: a name already taken there, or a name missing there.
PREPARED_STATEMENT_ERRORS = (errors.DuplicatePreparedStatement, errors.InvalidSqlStatementName)


@pytest.fixture(autouse=True)
def _no_bouncer_settings_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test says which settings it uses; none leaks in from the environment."""
    for name in ("PGQUEUE_PREPARED_STATEMENTS", "PGQUEUE_LISTEN_DSN", "PGQUEUE_DSN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def bouncer_dsn(pgbouncer: PgBouncer, dsn: str) -> str:
    """This test's own database, through the bouncer."""
    return pgbouncer.dsn_for(dsn)


def _dbname(dsn: str) -> str:
    return str(conninfo.conninfo_to_dict(dsn)["dbname"])


def assert_server_sessions_clean(pgbouncer: PgBouncer, dsn: str) -> None:
    """No server connection of the bouncer's pool for this database carries a prepared
    statement, a LISTEN or a session setting left by an earlier client."""
    sessions = pgbouncer.server_sessions(_dbname(dsn))
    prepared = [(s.pid, name) for s in sessions for name, _ in s.prepared]
    channels = [(s.pid, c) for s in sessions for c in s.channels]
    settings = [(s.pid, s.settings) for s in sessions if s.settings]
    assert prepared == [], f"prepared statements left on server connections: {prepared}"
    assert channels == [], f"LISTEN left on server connections: {channels}"
    assert settings == [], f"session settings left on server connections: {settings}"


def _count(db: Any, query: str, params: Any = None) -> int:
    row = db.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def _advisory_locks(db: Any) -> int:
    """Advisory locks held on this database by any session (pg_locks is cluster-wide)."""
    return _count(
        db,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )


def _prepared_statement_error(exc: BaseException) -> BaseException | None:
    """The psycopg prepared-statement error in an exception's chain, if any."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, PREPARED_STATEMENT_ERRORS):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


# --- the harness itself ------------------------------------------------------------------


def test_bouncer_is_a_transaction_pooler(pgbouncer: PgBouncer, bouncer_dsn: str) -> None:
    """The bouncer reaches the test's database, pools by transaction, and a psycopg
    connection with prepare_threshold=None runs any number of statements through it."""
    with psycopg.connect(bouncer_dsn, autocommit=True, prepare_threshold=None) as conn:
        for i in range(20):
            assert conn.execute("SELECT %s::int + 1", [i]).fetchone() == (i + 1,)
        row = conn.execute("SELECT current_database()").fetchone()
        assert row == (_dbname(bouncer_dsn),)
        # Transaction mode: while another client holds the server connection this one just
        # used, this client's next statement runs on another backend. In session mode a
        # client keeps one backend for life.
        first = conn.execute("SELECT pg_backend_pid()").fetchone()
        with psycopg.connect(bouncer_dsn, prepare_threshold=None) as other:
            held = other.execute("SELECT pg_backend_pid()").fetchone()  # opens a transaction
            assert held == first
            second = conn.execute("SELECT pg_backend_pid()").fetchone()
            assert second != first
    pools = {p["database"]: p for p in pgbouncer.admin("SHOW POOLS")}
    assert pools[_dbname(bouncer_dsn)]["pool_mode"] == "transaction"


def test_raw_psycopg_prepared_statements_collide_through_the_bouncer(
    pgbouncer: PgBouncer, bouncer_dsn: str
) -> None:
    """The underlying problem, with psycopg alone: two clients with psycopg's default
    prepare_threshold (5) share a server connection, both name their first prepared
    statement `_pg3_0`, and the second one's PREPARE fails. Also shows that
    `server_sessions` sees what an earlier client prepared."""
    a = psycopg.connect(bouncer_dsn, autocommit=True)
    b = psycopg.connect(bouncer_dsn, autocommit=True)
    try:
        assert a.prepare_threshold == 5
        with pytest.raises(PREPARED_STATEMENT_ERRORS):
            for i in range(10):
                for conn in (a, b):
                    conn.execute("SELECT %s::int", [i])
    finally:
        a.close()
        b.close()
    names = {
        name for s in pgbouncer.server_sessions(_dbname(bouncer_dsn)) for name, _ in s.prepared
    }
    assert "_pg3_0" in names


# --- (a) the bug, on a default App -------------------------------------------------------


def test_default_app_collides_on_prepared_statements(
    pgbouncer: PgBouncer, bouncer_dsn: str
) -> None:
    """Regression: a plain `pgqueue.App(bouncer_dsn)` (server-side prepared statements on,
    psycopg's default) cannot enqueue 20 jobs one by one through a transaction pooler.

    With pgbouncer 1.18 this fails on the 12th enqueue: the App's pool holds two client
    connections, both of which prepare `_pg3_0` on the one server connection. If pgqueue
    ever turns prepared statements off by default, this test is what to change.
    """
    app = pgqueue.App(bouncer_dsn)
    enqueued = 0
    try:
        with pytest.raises(Exception) as caught:  # the chain is checked below
            for i in range(20):
                app.enqueue("bounced.record", {"n": i})
                enqueued += 1
    finally:
        app.close()
    assert _prepared_statement_error(caught.value) is not None, repr(caught.value)
    assert 5 <= enqueued < 20  # the first statements ran unprepared, then it broke
    sessions = pgbouncer.server_sessions(_dbname(bouncer_dsn))
    assert any(name.startswith("_pg3_") for s in sessions for name, _ in s.prepared)


# --- (b) enqueueing through the bouncer --------------------------------------------------


@pytest.fixture
def bapp(bouncer_dsn: str) -> Iterator[pgqueue.App]:
    """An App on the bouncer with server-side prepared statements off."""
    application = pgqueue.App(bouncer_dsn, prepared_statements=False)
    yield application
    application.close()


def test_single_enqueues(bapp: pgqueue.App, pgbouncer: PgBouncer, dsn: str, db: Any) -> None:
    jobs = [bapp.enqueue("bounced.record", {"n": i}) for i in range(50)]
    assert len({job.id for job in jobs}) == 50
    assert _count(db, "SELECT count(*) FROM pgqueue.jobs WHERE state = 'available'") == 50
    assert bapp.get_job(jobs[-1].id).args == {"n": 49}
    bapp.close()
    assert_server_sessions_clean(pgbouncer, dsn)


def test_enqueue_many_20000(bapp: pgqueue.App, pgbouncer: PgBouncer, dsn: str, db: Any) -> None:
    jobs = bapp.enqueue_many("bounced.record", ({"n": i} for i in range(20_000)))
    assert len(jobs) == 20_000 and len({job.id for job in jobs}) == 20_000
    # More calls than psycopg's prepare threshold, on the same statement.
    for k in range(6):
        assert len(bapp.enqueue_many("bounced.record", [{"n": k}, {"n": k}])) == 2
    assert _count(db, "SELECT count(*) FROM pgqueue.jobs") == 20_012
    bapp.close()
    assert_server_sessions_clean(pgbouncer, dsn)


def test_transactional_enqueue_on_a_psycopg_connection_through_the_bouncer(
    bapp: pgqueue.App, bouncer_dsn: str, pgbouncer: PgBouncer, dsn: str, db: Any
) -> None:
    """The job exists iff the caller's transaction (on the bouncer) commits."""
    db.execute(ORDERS)
    committed: list[int] = []
    rolled_back: list[int] = []
    with psycopg.connect(bouncer_dsn, autocommit=True, prepare_threshold=None) as conn:
        for i in range(20):
            keep = i % 2 == 0
            with conn.transaction():
                conn.execute("INSERT INTO orders (id) VALUES (%s)", [i])
                job = bapp.enqueue("bounced.record", {"n": i}, conn=conn)
                (committed if keep else rolled_back).append(job.id)
                if not keep:
                    raise psycopg.Rollback()
    ids = {r[0] for r in db.execute("SELECT id FROM pgqueue.jobs").fetchall()}
    assert ids == set(committed)
    assert not ids & set(rolled_back)
    orders = {r[0] for r in db.execute("SELECT id FROM orders").fetchall()}
    assert orders == set(range(0, 20, 2))
    bapp.close()
    assert_server_sessions_clean(pgbouncer, dsn)


def test_transactional_enqueue_in_a_sqlalchemy_session_through_the_bouncer(
    bapp: pgqueue.App, bouncer_dsn: str, pgbouncer: PgBouncer, dsn: str, db: Any
) -> None:
    db.execute(ORDERS)
    url = bouncer_dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sqlalchemy.create_engine(url, connect_args={"prepare_threshold": None})
    committed: list[int] = []
    rolled_back: list[int] = []
    try:
        for i in range(20):
            with Session(engine) as session:
                session.execute(sqlalchemy.text("INSERT INTO orders (id) VALUES (:id)"), {"id": i})
                job = bapp.enqueue("bounced.record", {"n": i}, session=session)
                if i % 2 == 0:
                    session.commit()
                    committed.append(job.id)
                else:
                    session.rollback()
                    rolled_back.append(job.id)
    finally:
        engine.dispose()
    ids = {r[0] for r in db.execute("SELECT id FROM pgqueue.jobs").fetchall()}
    assert ids == set(committed)
    assert not ids & set(rolled_back)
    orders = {r[0] for r in db.execute("SELECT id FROM orders").fetchall()}
    assert orders == set(range(0, 20, 2))
    bapp.close()
    assert_server_sessions_clean(pgbouncer, dsn)


# --- (c) a worker process through the bouncer --------------------------------------------


@contextmanager
def running_worker(
    monkeypatch: pytest.MonkeyPatch, bouncer_dsn: str, direct_dsn: str, *args: str
) -> Iterator[WorkerProcess]:
    """`pgqueue worker tests.apps.bounced:app ARGS` on the bouncer; stopped with SIGTERM at
    the end, which it must survive with exit status 0."""
    monkeypatch.setenv("PGQUEUE_TEST_LEDGER_DSN", direct_dsn)
    proc = spawn_worker(APP, bouncer_dsn, "-c", "4", *args)
    try:
        yield proc
    except BaseException:
        proc.kill()
        out, _ = proc.communicate(timeout=30)
        print(out.decode(errors="replace")[-5000:])
        raise
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=60)
    except Exception:
        proc.kill()
        out, _ = proc.communicate(timeout=30)
        raise AssertionError(f"worker did not stop: {out.decode()[-3000:]}") from None
    assert proc.returncode == 0, out.decode(errors="replace")[-5000:]


def _alive(proc: WorkerProcess) -> Callable[[], None]:
    def check() -> None:
        if proc.poll() is not None:
            out, _ = proc.communicate()
            raise AssertionError(f"worker exited early: {out.decode(errors='replace')[-3000:]}")

    return check


def _drain_200(proc: WorkerProcess, dsn: str, db: Any) -> None:
    direct = pgqueue.App(dsn)  # enqueue directly: what is under test here is the worker
    jobs = direct.enqueue_many("bounced.record", ({"n": i} for i in range(200)))
    direct.close()
    check = _alive(proc)

    def done() -> bool:
        check()
        return _count(db, "SELECT count(*) FROM pgqueue.jobs WHERE state = 'completed'") == 200

    wait_until(done, 90, "the worker to complete 200 jobs through the bouncer")
    total, distinct = db.execute("SELECT count(*), count(DISTINCT job_id) FROM ledger").fetchone()
    assert (total, distinct) == (200, 200)  # each job ran, and once
    assert {r[0] for r in db.execute("SELECT job_id FROM ledger").fetchall()} == {
        j.id for j in jobs
    }


def test_worker_with_listen_dsn_drains_and_wakes_on_notify(
    monkeypatch: pytest.MonkeyPatch, bouncer_dsn: str, pgbouncer: PgBouncer, dsn: str, db: Any
) -> None:
    """Through the bouncer, LISTEN on the direct DSN: an idle worker polling only every 30 s
    runs a job enqueued (through the bouncer) within a few seconds, three times over."""
    db.execute(LEDGER)
    args = ("--no-prepared-statements", "--listen-dsn", dsn, "--poll-interval", "30")
    with running_worker(monkeypatch, bouncer_dsn, dsn, *args) as proc:
        _drain_200(proc, dsn, db)
        # The listener is a direct session of this database, idle on its LISTEN.
        wait_until(
            lambda: (
                _count(
                    db,
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
                )
                >= 1
            ),
            10,
            "the worker's LISTEN session",
        )
        app = pgqueue.App(bouncer_dsn, prepared_statements=False)
        try:
            check = _alive(proc)
            for n in range(3):
                job = app.enqueue("bounced.record", {"n": 1000 + n})
                started = time.monotonic()

                def ran(job_id: int = job.id) -> bool:
                    check()
                    return (
                        _count(db, "SELECT count(*) FROM ledger WHERE job_id = %s", [job_id]) == 1
                    )

                # Well before the 30 s poll: only the notification can have woken it.
                wait_until(ran, 10, f"pickup of job {job.id} by an idle worker (poll 30 s)")
                assert time.monotonic() - started < 10
        finally:
            app.close()
    assert_server_sessions_clean(pgbouncer, dsn)


@pytest.mark.parametrize(
    "listen_args",
    [pytest.param(["--no-listen"], id="no-listen"), pytest.param([], id="no-listen-dsn")],
)
def test_worker_without_listen_dsn_drains_by_polling(
    monkeypatch: pytest.MonkeyPatch,
    bouncer_dsn: str,
    pgbouncer: PgBouncer,
    dsn: str,
    db: Any,
    listen_args: list[str],
) -> None:
    """No listen DSN (with or without --no-listen): the worker polls, runs everything once,
    and leaves no LISTEN, prepared statement or SET on the bouncer's server connections."""
    db.execute(LEDGER)
    args = ("--no-prepared-statements", *listen_args, "--poll-interval", "0.2")
    with running_worker(monkeypatch, bouncer_dsn, dsn, *args) as proc:
        _drain_200(proc, dsn, db)
        # And a job enqueued later is found by the next poll.
        app = pgqueue.App(bouncer_dsn, prepared_statements=False)
        try:
            job = app.enqueue("bounced.record", {"n": 7})
            check = _alive(proc)

            def ran() -> bool:
                check()
                return _count(db, "SELECT count(*) FROM ledger WHERE job_id = %s", [job.id]) == 1

            wait_until(ran, 10, "pickup by polling")
        finally:
            app.close()
    assert_server_sessions_clean(pgbouncer, dsn)


# --- (d) job.wait through the bouncer ----------------------------------------------------


@pytest.mark.parametrize("with_listen_dsn", [True, False], ids=["listen-dsn", "polling"])
def test_job_wait(
    monkeypatch: pytest.MonkeyPatch,
    bouncer_dsn: str,
    pgbouncer: PgBouncer,
    dsn: str,
    db: Any,
    with_listen_dsn: bool,
) -> None:
    """`job.wait` returns the result through the bouncer, times out when nothing runs the
    job, and never LISTENs through the bouncer. With a listen DSN it wakes on the
    notification: well before the row re-check (every 5 s) would have seen the outcome."""
    db.execute(LEDGER)
    listen_dsn = dsn if with_listen_dsn else None
    app = pgqueue.App(bouncer_dsn, prepared_statements=False, listen_dsn=listen_dsn)
    worker_args = ("--no-prepared-statements", "--no-listen", "--poll-interval", "0.2")
    try:
        with running_worker(monkeypatch, bouncer_dsn, dsn, *worker_args) as proc:
            check = _alive(proc)

            def registered() -> bool:
                check()
                return _count(db, "SELECT count(*) FROM pgqueue.workers") == 1

            wait_until(registered, 30, "the worker to start")
            for _ in range(3):
                job = app.enqueue("bounced.slow", {"seconds": 1.0})
                started = time.monotonic()
                assert job.wait(timeout=30) == {"slept": 1.0}
                elapsed = time.monotonic() - started
                assert elapsed < 30
                if with_listen_dsn:
                    assert elapsed < 4.0, f"job.wait took {elapsed:.1f} s: not woken by NOTIFY"
            # A job not due for an hour: TimeoutError after the timeout, not a hang.
            stranded = app.enqueue("bounced.slow", {"seconds": 0}, delay=3600)
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                stranded.wait(timeout=1.5)
            assert 1.4 <= time.monotonic() - started < 10
    finally:
        app.close()
    assert_server_sessions_clean(pgbouncer, dsn)


# --- (e) the CLI through the bouncer -----------------------------------------------------

runner = CliRunner()


@contextmanager
def recorded_connections(port: int) -> Iterator[list[int | None]]:
    """The prepare_threshold of every psycopg connection opened to `port` meanwhile
    (psycopg.connect, Connection.connect as pools call it, AsyncConnection.connect)."""
    seen: list[int | None] = []
    sync_connect = psycopg.Connection.connect.__func__  # type: ignore[attr-defined]
    async_connect = psycopg.AsyncConnection.connect.__func__  # type: ignore[attr-defined]

    def record(conn: Any) -> Any:
        if conn.info.port == port:
            seen.append(conn.prepare_threshold)
        return conn

    def connect(cls: Any, *args: Any, **kwargs: Any) -> Any:
        return record(sync_connect(cls, *args, **kwargs))

    async def aconnect(cls: Any, *args: Any, **kwargs: Any) -> Any:
        return record(await async_connect(cls, *args, **kwargs))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(psycopg.Connection, "connect", classmethod(connect))
        patch.setattr(psycopg.AsyncConnection, "connect", classmethod(aconnect))
        patch.setattr(psycopg, "connect", lambda *a, **k: psycopg.Connection.connect(*a, **k))
        yield seen


def test_every_cli_command_through_the_bouncer(
    bouncer_dsn: str, pgbouncer: PgBouncer, dsn: str, db: Any
) -> None:
    """Every command that reads or writes, with PGQUEUE_PREPARED_STATEMENTS=0, six rounds
    through the bouncer: each succeeds and does what it says, every connection it opens has
    prepared statements off, and the server connections are left clean."""
    direct = pgqueue.App(dsn)
    env = {"PGQUEUE_DSN": bouncer_dsn, "PGQUEUE_PREPARED_STATEMENTS": "0"}

    def invoke(*args: str) -> str:
        result = runner.invoke(cli, list(args), env=env)
        assert result.exit_code == 0, f"pgqueue {' '.join(args)}: {result.output}"
        return result.output

    try:
        with recorded_connections(pgbouncer.port) as seen:
            for _round in range(6):
                job = direct.enqueue("bounced.record", {"n": 1}, queue="bq", delay=3600)
                old = direct.enqueue_many("bounced.record", [{"n": 2}, {"n": 3}])
                db.execute(
                    "UPDATE pgqueue.jobs SET state = 'completed',"
                    " finished_at = now() - interval '2 days' WHERE id = ANY(%s)",
                    [[j.id for j in old]],
                )
                assert "bq" in invoke("status")
                invoke("status", "--json")
                invoke("jobs")
                invoke("jobs", "--json", "--state", "scheduled")
                assert str(job.id) in invoke("job", str(job.id))
                invoke("cancel", str(job.id))
                assert direct.get_job(job.id).state is pgqueue.JobState.CANCELLED
                invoke("retry", str(job.id))
                assert direct.get_job(job.id).state is pgqueue.JobState.AVAILABLE
                invoke("pause", "bq")
                assert db.execute(
                    "SELECT paused FROM pgqueue.queues WHERE name = 'bq'"
                ).fetchone() == (True,)
                invoke("resume", "bq")
                assert db.execute(
                    "SELECT paused FROM pgqueue.queues WHERE name = 'bq'"
                ).fetchone() == (False,)
                invoke("prune", "--older-than", "1d")
                left = _count(
                    db,
                    "SELECT count(*) FROM pgqueue.jobs WHERE id = ANY(%s)",
                    [[j.id for j in old]],
                )
                assert left == 0
                invoke("top", "--once")
                invoke("migrate")
    finally:
        direct.close()
    assert seen, "no connection to the bouncer was recorded"
    assert set(seen) == {None}, f"prepare_threshold of the CLI's connections: {set(seen)}"
    assert_server_sessions_clean(pgbouncer, dsn)
    assert _advisory_locks(db) == 0


def test_migrate_through_the_bouncer(pgbouncer: PgBouncer, empty_dsn: str) -> None:
    """`pgqueue migrate` on an empty database through the bouncer, then again and again:
    the schema is created once, and no advisory lock stays behind on a server connection
    (a leaked session lock would block every later direct migrate)."""
    env = {"PGQUEUE_DSN": pgbouncer.dsn_for(empty_dsn), "PGQUEUE_PREPARED_STATEMENTS": "0"}
    with recorded_connections(pgbouncer.port) as seen:
        first = runner.invoke(cli, ["migrate"], env=env)
        assert first.exit_code == 0 and "applied migrations" in first.output, first.output
        for _ in range(5):
            again = runner.invoke(cli, ["migrate"], env=env)
            assert again.exit_code == 0 and "up to date" in again.output, again.output
    assert seen and set(seen) == {None}, f"prepare_threshold of migrate's connections: {seen}"
    with psycopg.connect(empty_dsn, autocommit=True) as db:
        assert _advisory_locks(db) == 0
    job = pgqueue.App(empty_dsn).enqueue("bounced.record", {"n": 1})
    assert job.id > 0
    assert_server_sessions_clean(pgbouncer, empty_dsn)


def test_concurrent_migrate_through_the_bouncer(pgbouncer: PgBouncer, empty_dsn: str) -> None:
    """Three migrators at once through the bouncer, as three deploys starting together:
    all succeed, every migration is applied exactly once and in order (each in its own
    transaction, under a transaction-level lock, so two migrators may share the work), and
    no advisory lock is left.

    A session advisory lock cannot serialize them through a transaction pooler: all three
    may take it on the same server connection (it is re-entrant there), and the unlock may
    run on another one, leaving the lock held by an idle server connection.
    """
    bouncer_dsn = pgbouncer.dsn_for(empty_dsn)
    barrier = threading.Barrier(3)
    results: list[list[int] | BaseException] = []

    def migrate() -> None:
        try:
            app = pgqueue.App(bouncer_dsn, prepared_statements=False)
            try:
                barrier.wait(30)
                results.append(app.migrate())
            finally:
                app.close()
        except BaseException as exc:
            results.append(exc)

    # Daemon threads with a bound: a migrator stuck behind a leaked lock would wait forever
    # (until the database is dropped at teardown), and must fail the test, not hang it.
    threads = [threading.Thread(target=migrate, daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = sum(thread.is_alive() for thread in threads)
    assert stuck == 0, f"{stuck} migrator(s) still waiting after 30 s; the others: {results}"
    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == [], failures
    applied = [r for r in results if not isinstance(r, BaseException)]
    done = sorted(v for r in applied for v in r)
    from pgqueue._db.migrate import latest_version

    assert done == list(range(1, latest_version() + 1)), applied  # each, exactly once
    assert all(r == sorted(r) for r in applied), applied
    with psycopg.connect(empty_dsn, autocommit=True) as db:
        assert _advisory_locks(db) == 0
        versions = _count(db, "SELECT count(*) FROM pgqueue.migrations")
        in_order = db.execute(
            "SELECT array_agg(version ORDER BY applied_at, version) FROM pgqueue.migrations"
        ).fetchone()
    assert versions == len(done)
    assert in_order is not None and in_order[0] == sorted(in_order[0])
