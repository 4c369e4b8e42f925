"""Every enqueue path, against a real database: the job exists iff the caller commits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

import pgqueue
from tests.helpers import race, worker_thread


def count_jobs(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone()
    assert row is not None
    return int(row[0])


def sa_url(dsn: str) -> str:
    return dsn.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture
def send(app: pgqueue.App) -> pgqueue.Task[Any, Any]:
    @app.task(name="mail.send", queue="emails", max_attempts=5, priority=2)
    def send(user_id: int) -> None: ...

    return send


def listener(dsn: str, channel: str = "pgqueue_jobs") -> psycopg.Connection[Any]:
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute(f"LISTEN {channel}")
    return conn


def notified(conn: psycopg.Connection[Any], timeout: float) -> list[str]:
    return [n.payload for n in conn.notifies(timeout=timeout, stop_after=1)]


def assert_runs(app: pgqueue.App, expected: int) -> None:
    """A worker given the chance runs exactly the committed jobs: a rolled-back one never."""
    with worker_thread(app, burst=True) as worker:
        pass
    assert worker.stats["claimed"] == expected


def test_own_connection_enqueue_is_committed(send: Any, app: pgqueue.App, db: Any) -> None:
    job = send.enqueue(user_id=42)
    info = app.get_job(job.id)
    assert (info.task, info.queue, info.state, info.args) == (
        "mail.send",
        "emails",
        pgqueue.JobState.AVAILABLE,
        {"user_id": 42},
    )
    assert (info.priority, info.max_attempts, info.attempt) == (2, 5, 0)
    assert job.duplicate is False
    assert count_jobs(db) == 1


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_psycopg_transaction(send: Any, dsn: str, db: Any, outcome: str) -> None:
    wake = listener(dsn)
    with psycopg.connect(dsn) as conn:
        job = send.options(conn=conn).enqueue(user_id=1)
        # Inside the transaction: invisible to others, and nobody has been woken.
        assert count_jobs(db) == 0
        assert notified(wake, 0.2) == []
        getattr(conn, outcome)()
    if outcome == "commit":
        assert count_jobs(db) == 1
        assert notified(wake, 2) == ["emails"]
        assert send.app.get_job(job.id).state is pgqueue.JobState.AVAILABLE
    else:
        assert count_jobs(db) == 0
        assert notified(wake, 0.3) == []
    wake.close()
    assert_runs(send.app, 1 if outcome == "commit" else 0)


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_psycopg_async_transaction(send: Any, dsn: str, db: Any, outcome: str) -> None:
    wake = listener(dsn)

    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            await send.options(conn=conn).enqueue_async(user_id=1)
            assert count_jobs(db) == 0
            assert notified(wake, 0.2) == []
            await getattr(conn, outcome)()

    asyncio.run(main())
    assert count_jobs(db) == (1 if outcome == "commit" else 0)
    assert notified(wake, 2 if outcome == "commit" else 0.3) == (
        ["emails"] if outcome == "commit" else []
    )
    wake.close()
    assert_runs(send.app, 1 if outcome == "commit" else 0)


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_sqlalchemy_session(send: Any, dsn: str, db: Any, outcome: str) -> None:
    engine = create_engine(sa_url(dsn))
    db.execute("CREATE TABLE users (id int primary key)")
    with Session(engine) as session:
        session.execute(text("INSERT INTO users VALUES (7)"))
        send.options(session=session).enqueue(user_id=7)
        assert count_jobs(db) == 0
        getattr(session, outcome)()
    users = db.execute("SELECT count(*) FROM users").fetchone()
    expected = 1 if outcome == "commit" else 0
    assert (count_jobs(db), users[0] if users else None) == (expected, expected)
    engine.dispose()
    assert_runs(send.app, expected)


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_sqlalchemy_async_session(send: Any, dsn: str, db: Any, outcome: str) -> None:
    async def main() -> None:
        engine = create_async_engine(sa_url(dsn))
        async with AsyncSession(engine) as session:
            job = await send.options(session=session).enqueue_async(user_id=9)
            assert job.id > 0
            assert count_jobs(db) == 0
            await getattr(session, outcome)()
        await engine.dispose()

    asyncio.run(main())
    assert count_jobs(db) == (1 if outcome == "commit" else 0)
    assert_runs(send.app, 1 if outcome == "commit" else 0)


def test_own_connection_async_enqueue(send: Any, app: pgqueue.App) -> None:
    async def main() -> int:
        job = await send.enqueue_async(user_id=3)
        info = await app.get_job_async(job.id)
        await app.aclose()
        return info.args["user_id"]

    assert asyncio.run(main()) == 3


def test_options_override_task_defaults(send: Any, app: pgqueue.App, db: Any) -> None:
    job = send.options(queue="vip", priority=9, max_attempts=1).enqueue(user_id=1)
    info = app.get_job(job.id)
    assert (info.queue, info.priority, info.max_attempts) == ("vip", 9, 1)


def test_delay_uses_the_database_clock(send: Any, app: pgqueue.App, db: Any) -> None:
    job = send.options(delay=60).enqueue(user_id=1)
    row = db.execute(
        "SELECT state, run_at - created_at FROM pgqueue.jobs WHERE id = %s", [job.id]
    ).fetchone()
    assert row is not None
    assert row[0] == "scheduled"
    assert timedelta(seconds=59) < row[1] < timedelta(seconds=61)
    assert app.get_job(job.id).state is pgqueue.JobState.SCHEDULED


def test_run_at_in_the_past_is_available_now(send: Any, app: pgqueue.App) -> None:
    past = datetime.now(timezone.utc) - timedelta(hours=1)
    job = send.options(run_at=past).enqueue(user_id=1)
    assert app.get_job(job.id).state is pgqueue.JobState.AVAILABLE


def test_unique_key_returns_the_unfinished_job(send: Any, app: pgqueue.App, db: Any) -> None:
    first = send.options(unique_key="welcome-42").enqueue(user_id=42)
    second = send.options(unique_key="welcome-42").enqueue(user_id=42)
    assert (second.id, second.duplicate, first.duplicate) == (first.id, True, False)
    assert count_jobs(db) == 1
    # Once the job is finished the key is free again.
    db.execute("UPDATE pgqueue.jobs SET state = 'completed' WHERE id = %s", [first.id])
    third = send.options(unique_key="welcome-42").enqueue(user_id=42)
    assert third.id != first.id and not third.duplicate


def test_unique_key_is_race_free(send: Any, dsn: str, db: Any) -> None:
    def enqueue(go: Callable[[], None]) -> int:
        with psycopg.connect(dsn) as conn:
            go()
            job_id = int(send.options(conn=conn, unique_key="race").enqueue(user_id=1).id)
            conn.commit()
            return job_id

    ids = race(8, enqueue)
    assert len(ids) == 8 and len(set(ids)) == 1
    assert count_jobs(db) == 1


def test_enqueue_many_chunks_and_keeps_order(send: Any, app: pgqueue.App, db: Any) -> None:
    n = 12_345  # more than two chunks
    jobs = send.enqueue_many({"user_id": i} for i in range(n))
    assert len(jobs) == n
    rows = db.execute("SELECT id, (args->>'user_id')::int FROM pgqueue.jobs ORDER BY id").fetchall()
    assert [r[1] for r in rows] == list(range(n))
    assert [j.id for j in jobs] == [r[0] for r in rows]


def test_enqueue_many_never_hits_the_parameter_limit(send: Any, db: Any) -> None:
    # 70,000 jobs x 8 fields would be 560,000 parameters if bound one by one.
    jobs = send.enqueue_many({"user_id": i} for i in range(70_000))
    assert len(jobs) == 70_000 == count_jobs(db)


def test_enqueue_many_is_all_or_nothing(send: Any, dsn: str, db: Any) -> None:
    with pytest.raises(pgqueue.ValidationError):
        send.enqueue_many([{"user_id": 1}, {"user_id": float("nan")}])
    with pytest.raises(TypeError):
        send.enqueue_many([{"user_id": 1}, {"wrong": 2}])
    assert count_jobs(db) == 0
    with psycopg.connect(dsn) as conn:
        send.options(conn=conn).enqueue_many({"user_id": i} for i in range(7000))
        conn.rollback()
    assert count_jobs(db) == 0


def _with_bad_item_at(index: int, n: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield {"user_id": float("nan") if i == index else i}


def test_a_bad_item_in_a_later_batch_rolls_back_the_batches_already_sent(
    send: Any, db: Any
) -> None:
    """Batches after the first are validated and encoded while the server inserts the one
    before (pipelined); an error there still leaves nothing behind, and the pool's
    connection is fit for the next call."""
    with pytest.raises(pgqueue.ValidationError):
        send.enqueue_many(_with_bad_item_at(4_500, 7_000))  # in the third batch of 2,000
    assert count_jobs(db) == 0

    async def main() -> None:
        with pytest.raises(pgqueue.ValidationError):
            await send.enqueue_many_async(_with_bad_item_at(6_100, 7_000))
        assert len(await send.enqueue_many_async({"user_id": i} for i in range(5))) == 5

    asyncio.run(main())
    assert count_jobs(db) == 5
    assert len(send.enqueue_many({"user_id": i} for i in range(4_001))) == 4_001
    assert count_jobs(db) == 4_006


def test_a_bad_item_leaves_the_callers_transaction_as_it_was(send: Any, dsn: str, db: Any) -> None:
    with psycopg.connect(dsn) as conn:
        kept = send.options(conn=conn).enqueue(user_id=-1)
        with pytest.raises(pgqueue.ValidationError):
            send.options(conn=conn).enqueue_many(_with_bad_item_at(4_500, 7_000))
        more = send.options(conn=conn).enqueue_many({"user_id": i} for i in range(3))
        conn.commit()
    rows = db.execute("SELECT id FROM pgqueue.jobs ORDER BY id").fetchall()
    assert [r[0] for r in rows] == [kept.id, *(j.id for j in more)]


def test_enqueue_many_of_nothing_enqueues_nothing(send: Any, dsn: str, db: Any) -> None:
    assert send.enqueue_many([]) == []
    assert send.enqueue_many(x for x in [{"user_id": 1}] if False) == []
    assert asyncio.run(send.enqueue_many_async([])) == []
    with psycopg.connect(dsn) as conn:
        assert send.options(conn=conn).enqueue_many([]) == []
    assert count_jobs(db) == 0


def test_a_full_queue_in_a_later_batch_writes_nothing(app: pgqueue.App, db: Any) -> None:
    app.configure_queue("capped", max_depth=3_000)
    with pytest.raises(pgqueue.errors.QueueFull):
        app.enqueue_many("t.a", [{}] * 5_000, queue="capped")
    assert count_jobs(db) == 0
    assert len(app.enqueue_many("t.a", [{}] * 3_000, queue="capped")) == 3_000


def test_enqueue_by_name_needs_no_registration(app: pgqueue.App, send: Any) -> None:
    unknown = app.enqueue("billing.invoice", {"order": 5}, queue="billing", priority=3)
    info = app.get_job(unknown.id)
    assert (info.task, info.queue, info.priority, info.max_attempts) == (
        "billing.invoice",
        "billing",
        3,
        3,
    )
    known = app.enqueue("mail.send", {"user_id": 5})  # registered: its defaults apply
    info = app.get_job(known.id)
    assert (info.queue, info.priority, info.max_attempts) == ("emails", 2, 5)
    with pytest.raises(TypeError):
        app.enqueue("mail.send", {"nope": 1})


def test_sql_enqueue_from_a_trigger(dsn: str, db: Any, app: pgqueue.App) -> None:
    db.execute("CREATE TABLE orders (id serial primary key, email text)")
    db.execute("""
        CREATE FUNCTION orders_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pgqueue.enqueue('shop.send_receipt',
                                    jsonb_build_object('order_id', NEW.id), 'receipts');
            RETURN NEW;
        END $$;
        CREATE TRIGGER orders_enqueue AFTER INSERT ON orders
            FOR EACH ROW EXECUTE FUNCTION orders_enqueue();
    """)
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO orders (email) VALUES ('a@example.com')")
        conn.rollback()
    assert count_jobs(db) == 0
    db.execute("INSERT INTO orders (email) VALUES ('b@example.com')")
    row = db.execute("SELECT task, queue, args, state FROM pgqueue.job_status").fetchone()
    assert row == ("shop.send_receipt", "receipts", {"order_id": 2}, "available")


def test_sql_enqueue_defaults_and_unique_key(db: Any) -> None:
    first = db.execute("SELECT pgqueue.enqueue('a.b', unique_key => 'k1')").fetchone()
    again = db.execute("SELECT pgqueue.enqueue('a.b', '{\"x\": 1}', unique_key => 'k1')").fetchone()
    assert first == again
    row = db.execute("SELECT queue, priority, max_attempts, args FROM pgqueue.jobs").fetchone()
    assert row == ("default", 0, 3, {})


@pytest.mark.parametrize(
    "call",
    [
        lambda t: t.enqueue(5),
        lambda t: t.enqueue(user_id=float("inf")),
        lambda t: t.enqueue(user_id="nul\x00"),
        lambda t: t.enqueue(user_id=object()),
        lambda t: t.options(queue="bad queue").enqueue(user_id=1),
        lambda t: t.app.enqueue("bad name;", {}),
        lambda t: t.app.enqueue("ok.name", ["not", "a", "mapping"]),
    ],
)
def test_bad_input_writes_nothing(send: Any, db: Any, call: Any) -> None:
    with pytest.raises((TypeError, pgqueue.ValidationError)):
        call(send)
    assert count_jobs(db) == 0


@pytest.mark.parametrize(
    ("task", "queue"),
    [("x", "a b"), ("x", "-lead"), ("x", "q" * 129), ("bad name", "default"), ("t" * 129, "q")],
)
def test_database_rejects_bad_names_from_sql_too(db: Any, task: str, queue: str) -> None:
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("SELECT pgqueue.enqueue(%s, '{}', queue => %s)", [task, queue])
    db.rollback()
    assert count_jobs(db) == 0


def test_database_accepts_the_longest_names(db: Any) -> None:
    db.execute("SELECT pgqueue.enqueue(%s, '{}', queue => %s)", ["t" * 128, "q:-." * 32])
    assert count_jobs(db) == 1


class AppSession(Session):
    """A project's own Session subclass (as Flask-SQLAlchemy and others define)."""


def test_sqlalchemy_session_subclass(send: Any, dsn: str, db: Any) -> None:
    engine = create_engine(sa_url(dsn))
    with AppSession(engine) as session:
        send.options(session=session).enqueue(user_id=5)
        session.commit()
    engine.dispose()
    assert count_jobs(db) == 1


def test_retry_refuses_to_break_a_unique_key(send: Any, app: pgqueue.App, db: Any) -> None:
    first = send.options(unique_key="k").enqueue(user_id=1)
    db.execute("UPDATE pgqueue.jobs SET state = 'failed' WHERE id = %s", [first.id])
    send.options(unique_key="k").enqueue(user_id=1)  # the key is free again: a new job
    with pytest.raises(pgqueue.ValidationError, match="unique_key"):
        app.retry(first.id)
