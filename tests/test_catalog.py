"""The task catalog and the stored redaction keys (issue 11, defects 4 and 10): SQL enqueue
and enqueue-by-name in a process without the task apply the task's own defaults, and every
reader masks every App's redaction keys."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from pgqueue.cli import app as cli
from typer.testing import CliRunner

import pgqueue
from pgqueue.testing import drain


def _row(db: psycopg.Connection[Any], job_id: int) -> tuple[Any, ...]:
    row = db.execute(
        "SELECT queue, priority, max_attempts, timeout FROM pgqueue.jobs WHERE id = %s",
        [job_id],
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_sql_enqueue_applies_the_defaults_a_worker_registered(dsn: str, db: Any) -> None:
    worker_app = pgqueue.App(dsn)

    @worker_app.task(name="shop.send_receipt", queue="emails", priority=5, max_attempts=7,
                     timeout=30)  # fmt: skip
    def send_receipt(order_id: int) -> None: ...

    drain(worker_app)  # a worker starting writes the catalog
    job_id = db.execute(
        "SELECT pgqueue.enqueue('shop.send_receipt', '{\"order_id\": 1}')"
    ).fetchone()[0]
    assert _row(db, job_id) == ("emails", 5, 7, 30.0)
    # What the caller passes still wins over the catalog.
    job_id = db.execute(
        "SELECT pgqueue.enqueue('shop.send_receipt', '{}', queue => 'vip', max_attempts => 2)"
    ).fetchone()[0]
    assert _row(db, job_id) == ("vip", 5, 2, 30.0)
    # A process without the task, by name, single and bulk: the same defaults.
    other = pgqueue.App(dsn)
    assert _row(db, other.enqueue("shop.send_receipt", {"order_id": 2}).id) == (
        "emails", 5, 7, 30.0,
    )  # fmt: skip
    bulk = other.enqueue_many("shop.send_receipt", [{"order_id": 3}, {"order_id": 4}])
    assert {_row(db, j.id) for j in bulk} == {("emails", 5, 7, 30.0)}
    # A task nobody registered keeps the built-in defaults.
    assert _row(db, other.enqueue("nobody.knows", {}).id) == ("default", 0, 3, None)
    tasks = {t["name"]: t for t in other.tasks_catalog()}
    assert tasks["shop.send_receipt"]["queue"] == "emails"
    worker_app.close()
    other.close()


def test_an_app_registers_its_tasks_with_its_first_statement(dsn: str, db: Any) -> None:
    app = pgqueue.App(dsn)

    @app.task(name="cat.first", queue="reports")
    def first() -> None: ...

    assert db.execute("SELECT count(*) FROM pgqueue.tasks").fetchone() == (0,)
    first.enqueue()  # the catalog learns of it in the same pooled connection's first use
    assert db.execute("SELECT name, queue FROM pgqueue.tasks").fetchall() == [
        ("cat.first", "reports")
    ]

    @app.task(name="cat.later", max_attempts=9)
    def later() -> None: ...

    app.get_job(first.enqueue().id)  # any statement on our own connection writes it
    assert db.execute(
        "SELECT max_attempts FROM pgqueue.tasks WHERE name = 'cat.later'"
    ).fetchone() == (9,)
    app.close()


def test_the_catalog_is_not_written_inside_a_callers_transaction(dsn: str, db: Any) -> None:
    app = pgqueue.App(dsn)

    @app.task(name="cat.tx", queue="emails")
    def in_tx() -> None: ...

    with psycopg.connect(dsn) as conn:
        in_tx.options(conn=conn).enqueue()
        conn.commit()  # committed: a registration written in their transaction would show
    assert db.execute("SELECT count(*) FROM pgqueue.tasks").fetchone() == (0,)
    app.list_jobs()  # the next statement on one of our own connections writes it
    assert db.execute("SELECT name FROM pgqueue.tasks").fetchall() == [("cat.tx",)]
    app.close()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("SELECT pgqueue.enqueue('t', jsonb_build_object('blob', repeat('x', 1100000)))",
         "the limit is 1048576"),
        ("SELECT pgqueue.enqueue('t', '{}', unique_key => '')", "unique_key must be"),
        ("SELECT pgqueue.enqueue_many('t', jsonb_build_array("
         "jsonb_build_object('blob', repeat('x', 1100000))))", "the limit is 1048576"),
    ],
)  # fmt: skip
def test_sql_enqueue_refuses_what_python_refuses(db: Any, call: str, message: str) -> None:
    with pytest.raises(psycopg.Error, match=message):
        db.execute(call)
    assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (0,)


def test_every_reader_honours_every_apps_redaction_keys(dsn: str, db: Any) -> None:
    shop = pgqueue.App(dsn, redact_keys=["card_number"])

    @shop.task(name="shop.charge")
    def charge(card_number: str, amount: int) -> None: ...

    job = charge.enqueue(card_number="4242424242424242", amount=10)
    # The CLI builds its own App with default keys; it must still mask the card.
    result = CliRunner().invoke(cli, ["job", str(job.id), "--dsn", dsn])
    assert result.exit_code == 0, result.output
    assert "4242424242424242" not in result.output
    assert "***" in result.output
    reader = pgqueue.App(dsn)
    assert "card_number" in reader.stored_redact_keys()
    shop.close()
    reader.close()


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_sqlalchemy_session_on_psycopg2(dsn: str, db: Any, outcome: str) -> None:
    """Teams still on psycopg2 enqueue inside their SQLAlchemy sessions too: pgqueue runs its
    statements through `exec_driver_sql`, whatever the DBAPI underneath."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.orm import Session

    app = pgqueue.App(dsn)

    @app.task(name="pg2.send")
    def send(user_id: int) -> None: ...

    engine = create_engine(dsn.replace("postgresql://", "postgresql+psycopg2://"))
    with Session(engine) as session:
        session.execute(text("CREATE TABLE IF NOT EXISTS users (id int)"))
        session.execute(text("INSERT INTO users VALUES (42)"))
        job = send.options(session=session).enqueue(user_id=42)
        getattr(session, outcome)()
    engine.dispose()
    found = db.execute("SELECT count(*) FROM pgqueue.jobs WHERE id = %s", [job.id]).fetchone()
    assert found == ((1,) if outcome == "commit" else (0,))
    app.close()


def test_tasks_command_lists_the_catalog(dsn: str) -> None:
    app = pgqueue.App(dsn)

    @app.task(name="cat.listed", queue="reports", max_attempts=4, timeout=90)
    def listed() -> None: ...

    drain(app)  # the worker registers it
    runner = CliRunner()
    table = runner.invoke(cli, ["tasks", "--dsn", dsn])
    assert table.exit_code == 0, table.output
    assert "cat.listed" in table.output and "reports" in table.output and "90s" in table.output
    as_json = runner.invoke(cli, ["tasks", "--dsn", dsn, "--json"])
    import json

    (entry,) = json.loads(as_json.output)["tasks"]
    assert (entry["name"], entry["queue"], entry["max_attempts"], entry["timeout"]) == (
        "cat.listed", "reports", 4, 90.0,
    )  # fmt: skip
    app.close()
