"""Topics against a real PostgreSQL: publish fans out to every matching subscription, in
the caller's transaction, all or nothing, from Python and from SQL (a trigger too)."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

import pgqueue
from pgqueue.errors import ValidationError
from tests.helpers import wait_until, worker_thread

Conn = psycopg.Connection[tuple[Any, ...]]


def _jobs(db: Conn) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT task, queue, topic, args FROM pgqueue.job_status ORDER BY task, id"
    ).fetchall()


def _count(db: Conn) -> int:
    row = db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone()
    assert row is not None
    return int(row[0])


def test_wildcards_fan_out_to_subscribers_in_different_queues(app: pgqueue.App, db: Conn) -> None:
    app.subscribe("orders.created", "crm.export", queue="crm")
    app.subscribe("orders.*", "audit.record", queue="audit")
    app.subscribe("orders.#", "lake.load", queue="lake")
    app.subscribe("#", "firehose.store", queue="firehose")
    app.subscribe("*.created", "counter.bump")  # the task's default queue
    app.subscribe("orders.*.shipped", "courier.notify", queue="courier")

    jobs = app.publish("orders.created", {"order_id": 42})
    assert len(jobs) == 5
    assert _jobs(db) == [
        ("audit.record", "audit", "orders.created", {"order_id": 42}),
        ("counter.bump", "default", "orders.created", {"order_id": 42}),
        ("crm.export", "crm", "orders.created", {"order_id": 42}),
        ("firehose.store", "firehose", "orders.created", {"order_id": 42}),
        ("lake.load", "lake", "orders.created", {"order_id": 42}),
    ]
    db.execute("DELETE FROM pgqueue.jobs")
    # `#` matches zero segments, `*` exactly one
    assert {app.get_job(j.id).task for j in app.publish("orders")} == {
        "lake.load",
        "firehose.store",
    }
    db.execute("DELETE FROM pgqueue.jobs")
    shipped = {app.get_job(j.id).task for j in app.publish("orders.eu.shipped", {})}
    assert shipped == {"lake.load", "firehose.store", "courier.notify"}
    db.execute("DELETE FROM pgqueue.jobs")
    assert [app.get_job(j.id).task for j in app.publish("invoices.paid")] == ["firehose.store"]
    app.unsubscribe("#", "firehose.store")
    assert app.publish("invoices.paid") == []  # nothing subscribes: no job, no error


def test_a_task_subscribed_twice_gets_one_job_per_message(app: pgqueue.App, db: Conn) -> None:
    app.subscribe("orders.created", "crm.export", queue="crm", priority=5)
    app.subscribe("orders.*", "crm.export", queue="other")
    jobs = app.publish("orders.created", {"order_id": 1})
    assert len(jobs) == 1
    info = app.get_job(jobs[0].id)
    assert (info.queue, info.priority) == ("crm", 5)  # the exact subscription's options


def test_publish_in_a_rolled_back_transaction_creates_no_job(app: pgqueue.App, dsn: str) -> None:
    app.subscribe("orders.created", "crm.export", queue="crm")
    app.subscribe("orders.*", "audit.record", queue="audit")
    with psycopg.connect(dsn) as conn:
        jobs = app.publish("orders.created", {"order_id": 1}, conn=conn)
        assert len(jobs) == 2
        conn.rollback()
        jobs = app.publish("orders.created", {"order_id": 2}, conn=conn)
        conn.commit()
    with psycopg.connect(dsn) as check:
        rows = check.execute("SELECT args FROM pgqueue.jobs ORDER BY id").fetchall()
    assert rows == [({"order_id": 2},), ({"order_id": 2},)]


def test_publish_with_a_sqlalchemy_session_joins_its_transaction(
    app: pgqueue.App, dsn: str, db: Conn
) -> None:
    app.subscribe("orders.created", "crm.export")
    engine = create_engine(dsn.replace("postgresql://", "postgresql+psycopg://"))
    with Session(engine) as session:
        app.publish("orders.created", {"order_id": 1}, session=session)
        session.rollback()
        app.publish("orders.created", {"order_id": 2}, session=session)
        session.commit()
    engine.dispose()
    assert [r[3] for r in _jobs(db)] == [{"order_id": 2}]


def test_a_failure_in_one_subscriber_refuses_the_whole_publish(app: pgqueue.App, db: Conn) -> None:
    app.subscribe("orders.created", "crm.export", queue="crm")
    app.subscribe("orders.created", "audit.record", queue="audit")
    # A subscriber's queue refuses the job (here: a CHECK a team added to one queue; back
    # pressure's QueueFull refuses the same way, from inside the same enqueue function).
    db.execute(
        "ALTER TABLE pgqueue.jobs ADD CONSTRAINT no_audit CHECK (queue <> 'audit') NOT VALID"
    )
    with pytest.raises(psycopg.errors.CheckViolation, match="no_audit"):
        app.publish("orders.created", {"order_id": 1})
    assert _count(db) == 0
    with pytest.raises(psycopg.errors.CheckViolation, match="no_audit"):
        app.publish_many("orders.created", [{"order_id": i} for i in range(3)])
    assert _count(db) == 0


def test_a_full_subscriber_queue_refuses_the_whole_publish_with_queue_full(
    app: pgqueue.App, db: Conn
) -> None:
    """Back pressure (max_depth) on one subscriber's queue refuses the publish for every
    subscriber: QueueFull, and no job at all."""
    app.subscribe("orders.created", "crm.export", queue="crm")
    app.subscribe("orders.created", "audit.record", queue="audit")
    app.configure_queue("audit", max_depth=2)
    app.publish_many("orders.created", [{"order_id": i} for i in range(2)])
    assert _count(db) == 4
    with pytest.raises(pgqueue.QueueFull) as refused:
        app.publish("orders.created", {"order_id": 9})
    assert (refused.value.queue, refused.value.max_depth) == ("audit", 2)
    with pytest.raises(pgqueue.QueueFull):
        app.publish_many("orders.created", [{"order_id": i} for i in range(3)])
    assert _count(db) == 4


def test_a_later_subscription_receives_only_later_publishes(app: pgqueue.App, db: Conn) -> None:
    app.subscribe("orders.created", "crm.export")
    app.publish("orders.created", {"n": 1})
    app.subscribe("orders.*", "audit.record")
    app.publish("orders.created", {"n": 2})
    assert [(t, a) for t, _, _, a in _jobs(db)] == [
        ("audit.record", {"n": 2}),
        ("crm.export", {"n": 1}),
        ("crm.export", {"n": 2}),
    ]
    # unsubscribing leaves the jobs already made
    assert app.unsubscribe("orders.*", "audit.record") is True
    assert app.unsubscribe("orders.*", "audit.record") is False
    assert _count(db) == 3


def test_publish_from_a_trigger_aborts_with_the_business_transaction(
    app: pgqueue.App, db: Conn
) -> None:
    app.subscribe("orders.created", "crm.export", queue="crm")
    app.subscribe("orders.*", "audit.record", queue="audit")
    db.execute("""
        CREATE TABLE public.orders (id int PRIMARY KEY, total int CHECK (total >= 0));
        CREATE FUNCTION public.order_created() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pgqueue.publish('orders.created', jsonb_build_object('order_id', NEW.id));
            RETURN NEW;
        END $$;
        CREATE TRIGGER order_created AFTER INSERT ON public.orders
            FOR EACH ROW EXECUTE FUNCTION public.order_created();
    """)
    db.execute("INSERT INTO public.orders VALUES (1, 10)")
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("INSERT INTO public.orders VALUES (2, 10), (3, -1)")
    assert [(t, q, topic, a) for t, q, topic, a in _jobs(db)] == [
        ("audit.record", "audit", "orders.created", {"order_id": 1}),
        ("crm.export", "crm", "orders.created", {"order_id": 1}),
    ]
    row = db.execute("SELECT pgqueue.publish('orders.paid', '{\"order_id\": 1}')").fetchone()
    assert row == (1,)  # how many jobs it made: only audit matches
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="not to a pattern"):
        db.execute("SELECT pgqueue.publish('orders.*')")


def test_one_notify_per_queue_however_many_jobs(app: pgqueue.App, dsn: str) -> None:
    app.subscribe("orders.created", "crm.export", queue="crm")
    app.subscribe("orders.*", "audit.record", queue="audit")
    app.subscribe("orders.#", "audit.other", queue="audit")
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute(f"LISTEN {app.queries.jobs_channel}")
        jobs = app.publish_many("orders.created", [{"n": i} for i in range(2500)])
        assert len(jobs) == 7500
        payloads = [n.payload for n in listener.notifies(timeout=1.0)]
    assert sorted(payloads) == ["audit", "crm"]


def test_publish_many_and_job_status_topic(app: pgqueue.App, db: Conn) -> None:
    app.subscribe("clicks.*", "stats.count", queue="stats")
    jobs = app.publish_many("clicks.home", [{"n": i} for i in range(2500)])  # 3 chunks
    assert [app.get_job(j.id).args["n"] for j in (jobs[0], jobs[1], jobs[-1])] == [0, 1, 2499]
    rows = db.execute("SELECT topic, count(*) FROM pgqueue.job_status GROUP BY topic").fetchall()
    assert rows == [("clicks.home", 2500)]
    app.enqueue("stats.count", {"n": -1})
    row = db.execute("SELECT topic FROM pgqueue.job_status ORDER BY id DESC LIMIT 1").fetchone()
    assert row == (None,)  # a plain enqueue records no topic, even right after a publish
    [sub] = app.subscriptions()
    assert sub["pattern"] == "clicks.*" and sub["published_last_hour"] == 2500
    assert sub["queue"] == "stats"


def test_the_jobs_command_filters_by_topic(app: pgqueue.App, dsn: str) -> None:
    import json

    from pgqueue.cli.main import app as cli
    from typer.testing import CliRunner

    app.subscribe("orders.*", "audit.record", queue="audit")
    published = {j.id for j in app.publish_many("orders.created", [{"n": 1}, {"n": 2}])}
    app.enqueue("audit.record", {"n": 3})  # the same task, no topic
    result = CliRunner().invoke(
        cli, ["jobs", "--topic", "orders.created", "--json"], env={"PGQUEUE_DSN": dsn}
    )
    assert result.exit_code == 0, result.output
    assert {row["id"] for row in json.loads(result.stdout)} == published


def test_bad_input_is_refused_and_nothing_is_written(app: pgqueue.App, db: Conn) -> None:
    app.subscribe("orders.created", "crm.export")
    for call, message in [
        (lambda: app.publish("orders.*", {}), "it is a pattern"),
        (lambda: app.publish("orders..created", {}), "invalid topic"),
        (lambda: app.publish("orders.created", {"x": float("nan")}), "not valid JSON"),
        (lambda: app.publish("orders.created", [1, 2]), "mapping"),  # type: ignore[arg-type]
        (lambda: app.publish_many("orders.created", [{"ok": 1}, 5]), "mapping"),  # type: ignore[list-item]
        (lambda: app.subscribe("orders.cre*", "crm.export"), "invalid topic pattern"),
        (lambda: app.subscribe("orders.*", "not a task"), "invalid task name"),
        (lambda: app.subscribe("orders.*", "crm.export", queue="bad queue"), "invalid queue"),
        (lambda: app.subscribe("orders.*", "crm.export", max_attempts=0), "at least 1"),
        (lambda: app.subscribe("orders.*", 42), "a Task or a task name"),  # type: ignore[arg-type]
    ]:
        with pytest.raises(ValidationError, match=message):
            call()
    assert _count(db) == 0
    assert [s["pattern"] for s in app.subscriptions()] == ["orders.created"]


def test_subscribe_is_idempotent_and_updates_options(app: pgqueue.App, db: Conn) -> None:
    @app.task(queue="crm")
    def export(order_id: int) -> None: ...

    app.subscribe("orders.created", export)
    app.subscribe("orders.created", export)
    app.subscribe("orders.created", export.name, priority=3)
    [sub] = app.subscriptions()
    assert (sub["task"], sub["queue"], sub["priority"]) == (export.name, "crm", 3)


def test_task_topics_are_written_when_a_worker_starts_and_its_jobs_run(app: pgqueue.App) -> None:
    seen: list[tuple[str, int]] = []

    @app.task(topics=["orders.created"])
    def receipt(order_id: int) -> None:
        seen.append(("receipt", order_id))

    @app.task(queue="audit", topics=["orders.*", "refunds.#"])
    def audit(order_id: int) -> None:
        seen.append(("audit", order_id))

    assert app.subscriptions() == []  # declared, not yet written
    with worker_thread(app, heartbeat_interval=0.2, heartbeat_timeout=1):
        wait_until(lambda: len(app.subscriptions()) == 3, 10, "the worker's subscriptions")
        jobs = app.publish("orders.created", {"order_id": 7})
        for job in jobs:
            job.wait(timeout=10)
    assert sorted(seen) == [("audit", 7), ("receipt", 7)]
    queues = {s["task"]: s["queue"] for s in app.subscriptions()}
    assert queues == {receipt.name: "default", audit.name: "audit"}
    with pytest.raises(ValidationError, match="invalid topic pattern"):
        app.task(name="bad.topics", topics=["a..b"])(lambda: None)


def test_async_twins(app: pgqueue.App, dsn: str) -> None:
    async def scenario() -> list[int]:
        await app.subscribe_async("orders.*", "audit.record", queue="audit")
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            rolled = await app.publish_async("orders.created", {"n": 1}, conn=conn)
            await conn.rollback()
            kept = await app.publish_many_async("orders.created", [{"n": 2}, {"n": 3}], conn=conn)
            await conn.commit()
        assert len(rolled) == 1
        assert [s["task"] for s in await app.subscriptions_async()] == ["audit.record"]
        assert await app.unsubscribe_async("orders.*", "audit.record")
        assert await app.publish_async("orders.created") == []
        return [j.id for j in kept]

    ids = asyncio.run(scenario())
    assert [app.get_job(i).args for i in ids] == [{"n": 2}, {"n": 3}]
