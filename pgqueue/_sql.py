"""The SQL seam: named queries from `sql/queries`, migrations from `sql/`, version checks.

Query files name the schema as `{schema}`; it is rendered once per App with
`psycopg.sql.Identifier`, so a schema name is always quoted and never formatted into text by
hand. Parameters stay `%(name)s` placeholders, which run unchanged on a psycopg cursor and
through SQLAlchemy's `exec_driver_sql`, so the caller's transaction is honoured either way.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from .errors import SchemaNotMigrated

_MIGRATION_FILE = re.compile(r"(\d{3})_([a-z0-9_]+)\.sql")


def _sql_dir() -> Traversable:
    try:
        return resources.files("pgqueue.sql")
    except ModuleNotFoundError:  # running from a source tree that was never installed
        return Path(__file__).resolve().parent.parent / "sql"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    text: str


@functools.cache
def migrations() -> tuple[Migration, ...]:
    found = []
    for entry in _sql_dir().iterdir():
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


@functools.cache
def _query_texts() -> dict[str, str]:
    folder = _sql_dir().joinpath("queries")
    return {
        entry.name.removesuffix(".sql"): entry.read_text(encoding="utf-8")
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    }


#: Queries rendered twice with different literal fragments (a parameter would hide the
#: predicate from the planner's partial-index matching): file -> {name: fragments}.
_QUEUE_FILTERS = {
    "_one": "queue = %(queue)s::text",  # in index order, straight from jobs_claim_queue_idx
    "_some": "queue = ANY(%(queues)s::text[])",
    "_all": "true",
}
_SUSPECT_FILTERS = {"": "rescue_count = 0", "_suspect": "rescue_count > 0"}
#: A claim continuing after the worker's previous one: equality on the leading key and a row
#: comparison on the rest, which the btree turns into the scan's starting point.
_CURSOR_FILTER = (
    "priority = %(after_priority)s::integer"
    " AND (run_at, id) > (%(after_run_at)s::timestamptz, %(after_id)s::bigint)"
)
_VARIANTS = {
    "job_claim": {
        f"job_claim{suspect}{queues}": {
            "queue_filter": qf,
            "suspect_filter": sf,
            "cursor_filter": "true",
        }
        for suspect, sf in _SUSPECT_FILTERS.items()
        for queues, qf in _QUEUE_FILTERS.items()
    }
    | {
        # Ordinary claims in one index order only: every queue, or one queue.
        f"job_claim_after{queues}": {
            "queue_filter": _QUEUE_FILTERS[queues],
            "suspect_filter": _SUSPECT_FILTERS[""],
            "cursor_filter": _CURSOR_FILTER,
        }
        for queues in ("_one", "_all")
    },
}


class Queries:
    """The named queries, rendered for one schema."""

    def __init__(self, schema: str) -> None:
        ident = sql.Identifier(schema)
        self.schema = schema
        self._texts: dict[str, str] = {}
        for name, text in _query_texts().items():
            variants = _VARIANTS.get(name, {name: {}})
            for variant, fragments in variants.items():
                parts = {k: sql.SQL(v) for k, v in fragments.items()}
                self._texts[variant] = sql.SQL(text).format(schema=ident, **parts).as_string()
        self.jobs_channel = f"{schema}_jobs"
        self.done_channel = f"{schema}_done"
        self.migrations_table = f"{ident.as_string()}.migrations"

    def __getitem__(self, name: str) -> str:
        return self._texts[name]

    def names(self) -> list[str]:
        return sorted(self._texts)


def not_migrated_error(schema: str, found: int | None) -> SchemaNotMigrated:
    need = latest_version()
    if found is None:
        return SchemaNotMigrated(
            f'the database has no pgqueue schema "{schema}": run `pgqueue migrate`'
        )
    return SchemaNotMigrated(
        f'pgqueue schema "{schema}" is at version {found} but this pgqueue needs {need}:'
        " run `pgqueue migrate`"
    )


_REGCLASS = "SELECT to_regclass(%(name)s) IS NOT NULL"

Fetch = Callable[[str, "dict[str, Any] | None"], Sequence[Sequence[Any]]]
AsyncFetch = Callable[[str, "dict[str, Any] | None"], Awaitable[Sequence[Sequence[Any]]]]


def _judge(queries: Queries, exists: bool, version: int | None) -> None:
    if not exists:
        raise not_migrated_error(queries.schema, None)
    if (version or 0) < latest_version():
        raise not_migrated_error(queries.schema, version or 0)


def check_schema(fetch: Fetch, queries: Queries) -> None:
    """Raise SchemaNotMigrated unless the schema is at least at the latest version.

    Asks `to_regclass` first so that, inside a caller's transaction, a missing schema is
    reported by us instead of aborting their transaction with an undefined-table error.
    """
    exists = bool(fetch(_REGCLASS, {"name": queries.migrations_table})[0][0])
    version = fetch(queries["schema_version"], None)[0][0] if exists else None
    _judge(queries, exists, version)


async def check_schema_async(fetch: AsyncFetch, queries: Queries) -> None:
    exists = bool((await fetch(_REGCLASS, {"name": queries.migrations_table}))[0][0])
    version = (await fetch(queries["schema_version"], None))[0][0] if exists else None
    _judge(queries, exists, version)


def migrate(conninfo: str, schema: str, kwargs: dict[str, Any] | None = None) -> list[int]:
    """Apply pending migrations in order; return the versions applied by this call.

    A session advisory lock serializes concurrent migrators (two deploys starting at once);
    each migration runs in its own transaction and inserts its version row first, so a
    migrator that somehow raced past the lock fails on the primary key instead of applying
    a migration twice.
    """
    ident = sql.Identifier(schema)
    lock_key = f"pgqueue.migrate:{schema}"
    applied: list[int] = []
    with psycopg.connect(conninfo, autocommit=True, **(kwargs or {})) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", [lock_key])
        try:
            with conn.transaction():
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {}.migrations ("
                        " version integer PRIMARY KEY,"
                        " name text NOT NULL,"
                        " applied_at timestamptz NOT NULL DEFAULT now())"
                    ).format(ident)
                )
            done = {
                row[0]
                for row in conn.execute(
                    sql.SQL("SELECT version FROM {}.migrations").format(ident)
                ).fetchall()
            }
            for migration in migrations():
                if migration.version in done:
                    continue
                with conn.transaction():
                    conn.execute(
                        sql.SQL("INSERT INTO {}.migrations (version, name) VALUES (%s, %s)").format(
                            ident
                        ),
                        [migration.version, migration.name],
                    )
                    conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(ident))
                    conn.execute(migration.text.encode())
                applied.append(migration.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [lock_key])
    return applied
