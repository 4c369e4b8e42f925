"""One enqueue path in SQL (005_one_enqueue_path.sql): single and bulk enqueue share their
defaults, validation, first state and wake-up, and bulk enqueue wakes workers by itself."""

from __future__ import annotations

import json
import random
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

import pgqueue
from tests.helpers import wait_until, worker_thread

Conn = psycopg.Connection[Any]
SQL_DIR = Path(__file__).resolve().parent.parent / "sql"


@pytest.fixture
def q(app: pgqueue.App) -> Any:
    """The named queries, rendered for the default schema as the library sends them."""
    return app.queries


def params(**given: Any) -> dict[str, Any]:
    """Parameters of the enqueue query files, every option NULL unless given."""
    base = {
        "queue": None,
        "priority": None,
        "run_at": None,
        "delay": None,
        "unique_key": None,
        "max_attempts": None,
        "timeout": None,
        "group_key": None,
        "expires_at": None,
        "expires_in": None,
    }
    return base | given


def single(q: Any, db: Conn, task: str = "t.one", **options: Any) -> int:
    """One job through the single-enqueue query file, as the library sends it."""
    row = db.execute(q["job_enqueue"], params(task=task, args="{}", **options)).fetchone()
    assert row is not None
    return int(row[0])


def bulk(q: Any, db: Conn, args: list[Any], task: str = "t.many", **options: Any) -> list[int]:
    """One chunk through the bulk query file, as the library sends it."""
    rows = db.execute(
        q["job_enqueue_many"], params(task=task, args=json.dumps(args), **options)
    ).fetchall()
    return [int(r[0]) for r in rows]


def job_row(db: Conn, job_id: int) -> tuple[Any, ...]:
    row = db.execute(
        "SELECT queue, max_attempts, priority, state, args, timeout FROM pgqueue.jobs"
        " WHERE id = %s",
        [job_id],
    ).fetchone()
    assert row is not None
    return tuple(row)


def listener(dsn: str, channel: str = "pgqueue_jobs") -> Conn:
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
    return conn


def received(conn: Conn, timeout: float) -> list[str]:
    """Every notification that arrives within `timeout` seconds."""
    return [n.payload for n in conn.notifies(timeout=timeout)]


# --- defaults --------------------------------------------------------------------------------


def test_null_queue_and_max_attempts_mean_the_database_defaults(q: Any, db: Conn) -> None:
    """A NULL queue or max_attempts is the default queue and 3 attempts, on both paths; the
    bulk path used to fail a NULL queue on the NOT NULL constraint."""
    one = single(q, db)
    many = bulk(q, db, [{}, {}])
    via_functions = [
        db.execute(
            "SELECT id FROM pgqueue.enqueue_job('t.f', '{}', NULL, NULL, NULL, NULL, NULL, NULL)"
        ).fetchall()[0][0],
        *[r[0] for r in db.execute("SELECT id FROM pgqueue.enqueue_many('t.f', '[{}]')")],
        db.execute("SELECT pgqueue.enqueue('t.f', queue => NULL)").fetchall()[0][0],
    ]
    expected = ("default", 3, 0, "available", {}, None)
    for job_id in [one, *many, *via_functions]:
        assert job_row(db, job_id) == expected
    # A row inserted directly gets the same defaults: they are defined once.
    db.execute("INSERT INTO pgqueue.jobs (task) VALUES ('t.raw')")
    row = db.execute("SELECT queue, max_attempts FROM pgqueue.jobs WHERE task = 't.raw'")
    assert row.fetchone() == ("default", 3)


def test_given_options_apply_alike_on_both_paths(q: Any, db: Conn) -> None:
    options = {"queue": "emails", "max_attempts": 7, "priority": 4, "timeout": 2.5}
    one = single(q, db, **options)
    (many,) = bulk(q, db, [{}], **options)
    assert job_row(db, one) == job_row(db, many) == ("emails", 7, 4, "available", {}, 2.5)


def test_library_enqueue_and_enqueue_many_apply_the_same_defaults(
    app: pgqueue.App, db: Conn
) -> None:
    """By name, with no registered task: the App sends no max_attempts and the database's
    default applies on both paths."""
    one = app.enqueue("billing.invoice", {"n": 0})
    (many,) = app.enqueue_many("billing.invoice", [{"n": 1}])
    assert job_row(db, one.id)[:4] == job_row(db, many.id)[:4] == ("default", 3, 0, "available")


@pytest.mark.parametrize("delay", [None, 0.0, 3600.0])
def test_first_state_follows_the_same_rule(q: Any, db: Conn, delay: float | None) -> None:
    one = single(q, db, delay=delay)
    (many,) = bulk(q, db, [{}], delay=delay)
    state = "scheduled" if delay else "available"
    assert job_row(db, one)[3] == job_row(db, many)[3] == state
    past = datetime.now().astimezone() - timedelta(minutes=5)
    one, (many,) = single(q, db, run_at=past), bulk(q, db, [{}], run_at=past)
    assert job_row(db, one)[3] == job_row(db, many)[3] == "available"


# --- validation ------------------------------------------------------------------------------


def _error(db: Conn, statement: str, args: list[Any]) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as caught, db.transaction():
        db.execute(statement, args)
    return caught.value


SINGLE = (
    "SELECT * FROM pgqueue.enqueue_job(%s::text, %s::jsonb, %s::text, %s::integer, NULL, NULL,"
    " %s::integer, %s::float8)"
)
BULK = (
    "SELECT * FROM pgqueue.enqueue_many(%s::text, %s::jsonb, %s::text, %s::integer, NULL,"
    " %s::integer, %s::float8)"
)


@pytest.mark.parametrize(
    ("task", "queue", "args", "max_attempts", "timeout", "constraint"),
    [
        ("x", "a b", {}, None, None, "jobs_queue_check"),
        ("x", "-lead", {}, None, None, "jobs_queue_check"),
        ("x", "q" * 129, {}, None, None, "jobs_queue_check"),
        ("bad name", None, {}, None, None, "jobs_task_check"),
        ("t" * 129, "q", {}, None, None, "jobs_task_check"),
        ("x", None, [1, 2], None, None, "jobs_args_check"),
        ("x", None, {}, 0, None, "jobs_max_attempts_check"),
        ("x", None, {}, None, 0.0, "jobs_timeout_check"),
    ],
)
def test_bad_input_from_sql_fails_alike_on_both_paths(
    db: Conn,
    task: str,
    queue: str | None,
    args: Any,
    max_attempts: int | None,
    timeout: float | None,
    constraint: str,
) -> None:
    one = _error(db, SINGLE, [task, json.dumps(args), queue, None, max_attempts, timeout])
    many = _error(db, BULK, [task, json.dumps([{}, args]), queue, None, max_attempts, timeout])
    for exc in (one, many):
        assert isinstance(exc, psycopg.errors.CheckViolation)
        assert exc.diag.constraint_name == constraint
    assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (0,)


@pytest.mark.parametrize("args", [{"not": "a list"}, None, 5])
def test_bulk_arguments_must_be_a_json_array(db: Conn, args: Any) -> None:
    document = None if args is None else json.dumps(args)
    exc = _error(db, BULK, ["x", document, None, None, None, None])
    assert isinstance(exc, psycopg.errors.InvalidParameterValue)
    assert "JSON array of argument objects" in str(exc)


def test_an_empty_array_enqueues_nothing_and_wakes_no_one(q: Any, dsn: str, db: Conn) -> None:
    with listener(dsn) as listening:
        assert bulk(q, db, []) == []
        assert received(listening, 0.3) == []
    assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (0,)


# --- order -------------------------------------------------------------------------------------


def test_ids_follow_the_input_order(q: Any, dsn: str) -> None:
    values = random.Random(5).sample(range(100_000), 3000)
    with psycopg.connect(dsn) as conn:  # several chunks in one transaction, as the App does
        ids = [
            *bulk(q, conn, [{"v": v} for v in values[:1000]]),
            *bulk(q, conn, [{"v": v} for v in values[1000:]]),
        ]
        conn.commit()
        rows = conn.execute("SELECT id, (args->>'v')::int FROM pgqueue.jobs ORDER BY id")
        stored = rows.fetchall()
    assert ids == sorted(ids)  # returned in input order, and ascending
    assert ids == [r[0] for r in stored]
    assert [r[1] for r in stored] == values


# --- wake-up -----------------------------------------------------------------------------------


def test_bulk_enqueue_notifies_its_queue_once_at_commit(q: Any, dsn: str) -> None:
    """The function wakes the queue's workers itself: delivered at commit, not before, and
    folded into one notification however many chunks the transaction inserted."""
    with listener(dsn) as listening, psycopg.connect(dsn) as conn:
        bulk(q, conn, [{"n": 1}, {"n": 2}], queue="mail")
        bulk(q, conn, [{"n": 3}], queue="mail")
        bulk(q, conn, [{"n": 4}], queue="sms")
        assert received(listening, 0.5) == []  # the transaction is still open
        conn.commit()
        assert sorted(received(listening, 1.0)) == ["mail", "sms"]
        bulk(q, conn, [{"n": 5}], queue="mail")
        conn.rollback()
        assert received(listening, 0.5) == []  # a rolled-back enqueue wakes no one


def test_scheduled_bulk_jobs_wake_no_one_like_single_ones(q: Any, dsn: str, db: Conn) -> None:
    with listener(dsn) as listening:
        single(q, db, queue="later", delay=3600.0)
        bulk(q, db, [{}], queue="later", delay=3600.0)
        assert received(listening, 0.5) == []
        single(q, db, queue="now")
        assert received(listening, 1.0) == ["now"]
        bulk(q, db, [{}], queue="now")
        assert received(listening, 1.0) == ["now"]


def test_bulk_sql_enqueue_wakes_an_idle_listening_worker(app: pgqueue.App, db: Conn) -> None:
    """Straight from SQL, with no client-side notify: an idle worker polling every 30 s
    starts the jobs at once."""

    @app.task(name="wake.probe")
    def probe(n: int) -> None: ...

    with worker_thread(app, poll_interval=30) as worker:
        wait_until(
            lambda: (
                db.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND query LIKE 'LISTEN %'"
                ).fetchone()
                >= (1,)
            ),
            10,
            "the worker's LISTEN",
        )
        time.sleep(0.3)  # idle: the poll that follows every LISTEN is over
        committed = time.monotonic()
        with db.transaction():
            db.execute(
                "SELECT * FROM pgqueue.enqueue_many('wake.probe', %s::jsonb)",
                [json.dumps([{"n": 1}, {"n": 2}])],
            )
        wait_until(lambda: worker.stats["completed"] >= 2, 10, "the jobs to run")
        assert time.monotonic() - committed < 5  # far below the 30 s poll


# --- migration ---------------------------------------------------------------------------------


def test_migration_applies_with_only_the_search_path_set(empty_dsn: str) -> None:
    """As a team's own migration tool would apply the files (`pgqueue migrate --sql`): one
    transaction each, with search_path set to the schema; applying 005 twice is harmless
    (again right after itself: a later migration replaces its functions' signatures)."""
    schema = f"q_{uuid.uuid4().hex[:6]}"
    files = sorted(SQL_DIR.glob("[0-9][0-9][0-9]_*.sql"))
    ours = SQL_DIR / "005_one_enqueue_path.sql"
    assert ours in files
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        at = files.index(ours) + 1
        for path in [*files[:at], ours, *files[at:]]:
            with conn.transaction():
                conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
                conn.execute(path.read_bytes())
        with listener(empty_dsn, f"{schema}_jobs") as listening:
            rows = conn.execute(
                sql.SQL("SELECT id FROM {}.enqueue_many('t', '[{{}}, {{}}]')").format(
                    sql.Identifier(schema)
                )
            ).fetchall()
            assert received(listening, 1.0) == ["default"]
        assert [r[0] for r in rows] == [1, 2]
        row = conn.execute(
            sql.SQL("SELECT queue, max_attempts FROM {}.jobs WHERE id = 1").format(
                sql.Identifier(schema)
            )
        ).fetchone()
        assert row == ("default", 3)
