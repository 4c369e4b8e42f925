"""Migrations: ordered, recorded, idempotent, safe to race; unmigrated use fails clearly."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

import pgqueue
from pgqueue._db.migrate import latest_version
from tests.helpers import race


def test_migrate_creates_schema_and_records_versions(empty_dsn: str) -> None:
    app = pgqueue.App(empty_dsn)
    assert app.migrate() == list(range(1, latest_version() + 1))
    with psycopg.connect(empty_dsn) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM pgqueue.migrations ORDER BY 1")]
        assert versions == list(range(1, latest_version() + 1))
    assert app.migrate() == []  # idempotent


def test_concurrent_migrators_apply_each_migration_once(empty_dsn: str) -> None:
    def migrate(go: Callable[[], None]) -> list[int]:
        go()
        return pgqueue.App(empty_dsn).migrate()

    results = race(6, migrate)
    applied = sorted(v for r in results for v in r)
    assert applied == list(range(1, latest_version() + 1))


def test_unmigrated_database_says_to_run_migrate(empty_dsn: str) -> None:
    app = pgqueue.App(empty_dsn)
    with pytest.raises(pgqueue.SchemaNotMigrated, match="pgqueue migrate"):
        app.enqueue("anything", {})
    with psycopg.connect(empty_dsn) as conn:  # inside a caller's transaction, too
        with pytest.raises(pgqueue.SchemaNotMigrated, match="pgqueue migrate"):
            app.enqueue("anything", {}, conn=conn)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS  # not aborted


def test_older_schema_version_says_to_run_migrate(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM pgqueue.migrations WHERE version = %s", [latest_version()])
    with pytest.raises(pgqueue.SchemaNotMigrated, match=r"at version \d+ .*`pgqueue migrate`"):
        pgqueue.App(dsn).enqueue("anything", {})


def test_custom_schema_is_isolated_and_quoted(empty_dsn: str) -> None:
    a = pgqueue.App(empty_dsn, schema="tenant_a")
    b = pgqueue.App(empty_dsn, schema="tenant_b")
    a.migrate()
    b.migrate()
    job = a.enqueue("t.x", {"n": 1})
    assert a.get_job(job.id).task == "t.x"
    with pytest.raises(pgqueue.JobNotFound):
        b.get_job(job.id)
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT tenant_a.enqueue('t.y')").fetchone() is not None


def _migrate_to(dsn: str, last: int) -> None:
    """Apply migrations 1..last the way `migrate` does, to stand for an older database."""
    from pgqueue._db.migrate import MigrationSql, migrations

    statements = MigrationSql.for_schema("pgqueue")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for migration in migrations():
            if migration.version > last:
                break
            with conn.transaction():
                conn.execute(statements.create_schema)
                conn.execute(statements.create_table)
                conn.execute(statements.record, [migration.version, migration.name])
                conn.execute(statements.set_search_path)
                conn.execute(migration.text.encode())


def test_unique_keys_shared_with_waiting_jobs_keep_one_holder(empty_dsn: str) -> None:
    """Before the unique index covered `waiting`, an unfinished job and waiting ones could
    share a key. The migration that extends it keeps the key on the job the old index held
    (else the oldest), clears it on the others, says so, and then holds it."""
    from pgqueue._db.migrate import migrations

    version = next(m.version for m in migrations() if m.name == "workflow_counters")
    _migrate_to(empty_dsn, version - 1)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "INSERT INTO pgqueue.jobs (task, state, unique_key) VALUES"
            " ('t', 'waiting', 'a'), ('t', 'available', 'a'), ('t', 'waiting', 'b'),"
            " ('t', 'waiting', 'b'), ('t', 'waiting', 'c'), ('t', 'completed', 'd'),"
            " ('t', 'waiting', 'd') RETURNING id"
        ).fetchall()
    ids = [r[0] for r in rows]
    notices: list[str] = []
    with psycopg.connect(empty_dsn) as conn:
        conn.add_notice_handler(lambda d: notices.append(str(d.message_primary)))
        from pgqueue._db.migrate import MigrationSql

        statements = MigrationSql.for_schema("pgqueue")
        for migration in migrations()[version - 1 :]:
            with conn.transaction():
                conn.execute(statements.record, [migration.version, migration.name])
                conn.execute(statements.set_search_path)
                conn.execute(migration.text.encode())
        keys = conn.execute(
            "SELECT unique_key FROM pgqueue.jobs WHERE id = ANY(%s) ORDER BY id", [ids]
        ).fetchall()
    assert [k[0] for k in keys] == [None, "a", "b", None, "c", "d", "d"]
    assert any(f"job {ids[0]} (a)" in n and f"job {ids[3]} (b)" in n for n in notices), notices
    app = pgqueue.App(empty_dsn)
    assert app.migrate() == []
    again = app.enqueue("t", {}, unique_key="b")
    assert (again.id, again.duplicate) == (ids[2], True)
