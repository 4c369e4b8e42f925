"""Migrations: numbered SQL files under `sql/`, applied in order, each in its own transaction."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from psycopg import sql

from .pools import Database
from .queries import sql_dir

_MIGRATION_FILE = re.compile(r"(\d{3})_([a-z0-9_]+)\.sql")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    text: str


@functools.cache
def migrations() -> tuple[Migration, ...]:
    found = []
    for entry in sql_dir().iterdir():
        match = _MIGRATION_FILE.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"pgqueue migrations are not numbered 1..n: {versions}")
    return tuple(found)


def latest_version() -> int:
    return migrations()[-1].version


@dataclass(frozen=True)
class MigrationSql:
    """The statements that apply one schema's migrations, rendered once: pgqueue's own
    connection (`migrate`) and Django's (`pgqueue._db.django.migrate`) run the same ones."""

    lock: str
    create_schema: str
    create_table: str
    #: Parameter: the version. A row means it is applied.
    applied: str
    #: Parameters: the version and the name; inserted before the migration's own text.
    record: str
    set_search_path: str
    drop: str

    @classmethod
    def for_schema(cls, schema: str) -> MigrationSql:
        ident = sql.Identifier(schema)

        def render(template: str) -> str:
            return sql.SQL(template).format(ident).as_string()

        return cls(
            lock=sql.SQL("SELECT pg_advisory_xact_lock(hashtextextended({}, 0))")
            .format(sql.Literal(f"pgqueue.migrate:{schema}"))
            .as_string(),
            create_schema=render("CREATE SCHEMA IF NOT EXISTS {}"),
            create_table=render(
                "CREATE TABLE IF NOT EXISTS {}.migrations ("
                " version integer PRIMARY KEY,"
                " name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            ),
            applied=render("SELECT 1 FROM {}.migrations WHERE version = %s"),
            record=render("INSERT INTO {}.migrations (version, name) VALUES (%s, %s)"),
            set_search_path=render("SET LOCAL search_path TO {}"),
            drop=render("DROP SCHEMA IF EXISTS {} CASCADE"),
        )


def migrate(database: Database, schema: str) -> list[int]:
    """Apply pending migrations in order; return the versions applied by this call.

    Each migration runs in its own transaction, which first takes a transaction-level
    advisory lock and then re-reads what is applied: concurrent migrators (two deploys
    starting at once) are serialized, and the lock is released by COMMIT or ROLLBACK itself.
    A session lock would not survive a transaction-mode pooler (PgBouncer), which may run
    the unlock on another server connection and leave the lock held for good. The version
    row is inserted first, so a migrator that somehow raced past the lock fails on the
    primary key instead of applying a migration twice.
    """
    statements = MigrationSql.for_schema(schema)
    applied: list[int] = []
    with database.connect() as conn:
        for migration in migrations():
            with conn.transaction():
                conn.execute(statements.lock)
                conn.execute(statements.create_schema)
                conn.execute(statements.create_table)
                if conn.execute(statements.applied, [migration.version]).fetchone():
                    continue
                conn.execute(statements.record, [migration.version, migration.name])
                conn.execute(statements.set_search_path)
                conn.execute(migration.text.encode())
            applied.append(migration.version)
    return applied


def drop_schema(database: Database, schema: str) -> None:
    """Drop a schema and everything in it (the testing helpers' throwaway schemas)."""
    with database.connect() as conn:
        conn.execute(MigrationSql.for_schema(schema).drop)
