"""Single enqueue without a pinned search_path (015_fast_enqueue.sql, issue 17): the enqueue
functions name every object with their schema instead, so they must find their own tables,
catalog, queue settings and channel from a session whose search_path points elsewhere, even
at a schema with look-alike tables; and they must not pin a setting again."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

import pgqueue
from tests.test_enqueue_path import listener, received

Conn = psycopg.Connection[Any]

#: The functions an enqueue calls per job; each with a SET clause paid a setting change.
HOT_FUNCTIONS = ("enqueue", "enqueue_job", "enqueue_many", "notify_channel", "depth_ok")


@pytest.fixture
def elsewhere(app: pgqueue.App, dsn: str) -> Any:
    """A session on another search_path, with decoys: a `jobs`, `tasks` and `queues` of its
    own (and a `notify_channel`) that an unqualified name would resolve to."""
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute("CREATE SCHEMA decoy")
    conn.execute("SET search_path TO decoy")
    conn.execute("CREATE TABLE decoy.jobs (LIKE pgqueue.jobs INCLUDING ALL)")
    conn.execute("CREATE TABLE decoy.tasks (LIKE pgqueue.tasks INCLUDING ALL)")
    conn.execute("CREATE TABLE decoy.queues (LIKE pgqueue.queues INCLUDING ALL)")
    conn.execute("INSERT INTO decoy.tasks (name, queue, priority) VALUES ('t.cat', 'wrong', 9)")
    conn.execute(
        "CREATE FUNCTION decoy.notify_channel() RETURNS text LANGUAGE sql AS $$ SELECT 'x' $$"
    )
    try:
        yield conn
    finally:
        conn.close()


def test_no_enqueue_function_pins_a_setting(db: Conn) -> None:
    rows = db.execute(
        "SELECT p.proname, p.proconfig FROM pg_proc AS p"
        " JOIN pg_namespace AS n ON n.oid = p.pronamespace"
        " WHERE n.nspname = 'pgqueue' AND p.proname = ANY(%s)",
        [list(HOT_FUNCTIONS)],
    ).fetchall()
    assert sorted(r[0] for r in rows) == sorted(HOT_FUNCTIONS)
    assert [r for r in rows if r[1] is not None] == []


def test_enqueue_from_another_search_path_uses_its_own_schema(
    app: pgqueue.App, dsn: str, db: Conn, elsewhere: Conn
) -> None:
    db.execute("INSERT INTO pgqueue.tasks (name, queue, priority) VALUES ('t.cat', 'mail', 4)")
    with listener(dsn) as listening:
        job_id = elsewhere.execute("SELECT pgqueue.enqueue('t.cat', '{\"a\": 1}')").fetchone()
        assert received(listening, 1.0) == ["mail"]
    assert job_id is not None
    row = db.execute(
        "SELECT queue, priority, max_attempts, args FROM pgqueue.jobs WHERE id = %s", job_id
    ).fetchone()
    assert row == ("mail", 4, 3, {"a": 1})
    # Bulk too, and nothing reached the decoys.
    ids = elsewhere.execute("SELECT id FROM pgqueue.enqueue_many('t.cat', '[{}, {}]')").fetchall()
    assert len(ids) == 2
    assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (3,)
    assert elsewhere.execute("SELECT count(*) FROM decoy.jobs").fetchone() == (0,)


def test_unique_keys_and_groups_from_another_search_path(
    app: pgqueue.App, db: Conn, elsewhere: Conn
) -> None:
    app.configure_queue("fair", fair=True)
    call = (
        "SELECT id, duplicate FROM pgqueue.enqueue_job("
        "'t.u', '{}', %s, NULL, NULL, %s, NULL, NULL, %s)"
    )
    first = elsewhere.execute(call, ["fair", "k1", None]).fetchone()
    again = elsewhere.execute(call, ["fair", "k1", None]).fetchone()
    assert first is not None and again == (first[0], True)
    grouped = elsewhere.execute(call, ["fair", None, "tenant-1"]).fetchone()
    assert grouped is not None
    rows = db.execute(
        "SELECT id, group_key FROM pgqueue.jobs ORDER BY id"
    ).fetchall()  # '' is the fair queue's ungrouped group
    assert rows == [(first[0], ""), (grouped[0], "tenant-1")]


def test_queue_full_from_another_search_path(app: pgqueue.App, db: Conn, elsewhere: Conn) -> None:
    app.configure_queue("q", max_depth=1)
    elsewhere.execute("SELECT pgqueue.enqueue('t.a', '{}', 'q')")
    for statement in (
        "SELECT pgqueue.enqueue('t.a', '{}', 'q')",
        "SELECT id FROM pgqueue.enqueue_many('t.a', '[{}]', 'q')",
    ):
        with pytest.raises(psycopg.Error) as info:
            elsewhere.execute(statement)
        assert info.value.sqlstate == "PGQ01"
        assert json.loads(info.value.diag.message_detail or "") == {
            "queue": "q",
            "depth": 1,
            "max_depth": 1,
        }
    assert app.rejected_enqueues() == 2
    assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (1,)


def test_a_queue_without_a_limit_is_never_counted(app: pgqueue.App, db: Conn) -> None:
    """The depth check runs only for a queue whose row has a max_depth: a queue with a row
    for another setting (a pause) enqueues past any depth."""
    app.pause("p")
    app.enqueue_many("t.a", [{}] * 5, queue="p")
    app.enqueue("t.a", {}, queue="p")
    assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (6,)
    assert app.rejected_enqueues() == 0


def test_other_schema_keeps_its_own_channel(server_dsn: str, dsn: str) -> None:
    """notify_channel is a constant now: each schema's, fixed when its migration ran."""
    other = pgqueue.App(dsn, schema="second")
    try:
        other.migrate()
        with psycopg.connect(dsn, autocommit=True) as conn:
            channel = conn.execute("SELECT second.notify_channel()").fetchone()
            assert channel == ("second_jobs",)
            assert conn.execute("SELECT pgqueue.notify_channel()").fetchone() == ("pgqueue_jobs",)
        with listener(dsn, "second_jobs") as listening:
            other.enqueue("t.a", {})
            assert received(listening, 1.0) == ["default"]
    finally:
        other.close()


def test_a_failed_pooled_enqueue_leaves_the_pool_usable(app: pgqueue.App) -> None:
    """A refused enqueue returns its pooled connection: more refusals than the pool holds
    connections, and the next enqueue still runs, with every connection back in the pool."""
    app.configure_queue("q", max_depth=1)
    app.enqueue("t.a", {}, queue="q")
    for _ in range(12):
        with pytest.raises(pgqueue.errors.QueueFull):
            app.enqueue("t.a", {}, queue="q")
    assert app.enqueue("t.a", {}, queue="other").id > 0
    stats = app.database.pool.get_stats()
    assert stats["pool_size"] - stats["pool_available"] == 0


def test_a_pooled_connection_left_outside_autocommit_still_commits(
    app: pgqueue.App, db: Conn
) -> None:
    """A caller may hand the App a pool whose connections are not autocommit (or switch one
    off, as the benchmark harness does): the single enqueue's job is committed anyway, by
    the connection's context on the way back into the pool."""
    with app.database.pool.connection() as conn:
        conn.autocommit = False
    for i in range(3):  # whichever connection the pool hands out
        app.enqueue("t.a", {"i": i})
    assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (3,)
