"""Django's database connection as a target: plans run on `connections[alias]`'s cursor, so
a job enqueued inside `transaction.atomic()` (or a savepoint in it) is part of that
transaction and exists iff it commits. No second connection, no `on_commit`.

Imported only by `pgqueue.contrib.django` (the seam stays the only importer of drivers and
of `django.db`). Django's psycopg backend loads jsonb columns as text (it decodes JSONField
itself), so this target decodes json/jsonb columns by their type OID; every other value
arrives as Django configured it (aware datetimes under `USE_TZ`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from django.db import IntegrityError, close_old_connections, connections, transaction

from .._core.plan import DuplicateKey, Pipeline, Plan, Query, Step
from .._core.schema import check_schema
from ..errors import SchemaNotMigrated
from .migrate import MigrationSql, latest_version, migrations
from .queries import Queries
from .targets import _as_dicts, _no_listen, drive

T = TypeVar("T")

#: json and jsonb: decoded here because Django's psycopg backend registers a text loader.
_JSON_OIDS = frozenset({114, 3802})


class DjangoTarget:
    """Runs a plan's queries on one Django connection (by alias), in whatever transaction
    the caller has open on it; never LISTENs (a caller's transaction is no place to wait)."""

    def __init__(self, alias: str, queries: Queries) -> None:
        self.alias = alias
        self.queries = queries

    def run(self, step: Step) -> Any:
        if isinstance(step, Pipeline):
            return [self.run(query) for query in step.queries]
        if not isinstance(step, Query):
            return _no_listen(step)
        with connections[self.alias].cursor() as cur:
            try:
                # No parameters, no placeholder parsing: as on pgqueue's own connections.
                params = None if step.params is None else dict(step.params)
                cur.execute(self.queries[step.name], params)
            except IntegrityError as exc:
                if isinstance(exc.__cause__, psycopg.errors.UniqueViolation):
                    raise DuplicateKey(str(exc.__cause__)) from exc
                raise
            if cur.description is None:
                return []
            decode = [getattr(c, "type_code", None) in _JSON_OIDS for c in cur.description]
            rows = [
                tuple(
                    json.loads(v) if d and isinstance(v, (str, bytes)) else v
                    for v, d in zip(row, decode, strict=True)
                )
                for row in cur.fetchall()
            ]
            names = [c.name for c in cur.description]
            return _as_dicts(names, rows) if step.columns else rows


class DjangoRunner:
    """Runs plans on a Django connection, checking the schema once first (inside a caller's
    transaction too: the check asks the catalog, so a missing schema is our error, not an
    aborted transaction)."""

    def __init__(self, alias: str, schema: str) -> None:
        self.alias = alias
        self.queries = Queries(schema)
        self.schema_ok = False

    def run(self, plan: Plan[T]) -> T:
        # The plan's first step is taken before any statement, so its validation errors
        # come first and an invalid call never touches the connection.
        first = next(plan)
        target = DjangoTarget(self.alias, self.queries)
        if not self.schema_ok:
            check = check_schema(self.queries.schema, latest_version())
            drive(check, target, next(check))
            self.schema_ok = True
        return drive(plan, target, first)


def migrate(alias: str, schema: str) -> list[int]:
    """Apply pgqueue's pending migrations on a Django connection; the versions applied.

    The same statements as `pgqueue migrate`, each migration in `atomic()` (a transaction of
    its own, or a savepoint inside Django's migration transaction), serialized by the same
    transaction-level advisory lock. The migration's `SET LOCAL search_path` is put back
    afterwards, since inside a savepoint it would outlive the migration.
    """
    if up_to_date(alias, schema):  # `post_migrate` asks after every migrate and flush
        return []
    statements = MigrationSql.for_schema(schema)
    applied: list[int] = []
    connection = connections[alias]
    for migration in migrations():
        with transaction.atomic(using=alias), connection.cursor() as cur:
            cur.execute(statements.lock)
            cur.execute(statements.create_schema)
            cur.execute(statements.create_table)
            cur.execute(statements.applied, [migration.version])
            if cur.fetchone():
                continue
            cur.execute(statements.record, [migration.version, migration.name])
            cur.execute("SELECT current_setting('search_path')")
            saved = cur.fetchone()[0]
            cur.execute(statements.set_search_path)
            cur.execute(migration.text)
            cur.execute("SELECT set_config('search_path', %s, true)", [saved])
        applied.append(migration.version)
    return applied


def up_to_date(alias: str, schema: str) -> bool:
    """Whether the schema is at this pgqueue's latest version (two catalog reads)."""
    check = check_schema(schema, latest_version())
    try:
        drive(check, DjangoTarget(alias, Queries(schema)), next(check))
    except SchemaNotMigrated:
        return False
    return True


def drop_schema(alias: str, schema: str) -> None:
    """The reverse of `migrate`: the schema and every job in it."""
    with connections[alias].cursor() as cur:
        cur.execute(MigrationSql.for_schema(schema).drop)


def _libpq_keywords() -> frozenset[str]:
    """What libpq accepts: Django's connection parameters also hold its cursor class, its
    adapters and its pool settings, which a DSN must leave out."""
    return frozenset(opt.keyword.decode() for opt in psycopg.pq.Conninfo.get_defaults())


def dsn_for(alias: str) -> str:
    """A libpq DSN for the database behind a Django alias: the worker's own pools connect
    with it (the claim loop cannot share Django's per-thread connections)."""
    params = connections[alias].get_connection_params()
    keywords = _libpq_keywords()
    kept = {
        k: v
        for k, v in params.items()
        if k in keywords and isinstance(v, (str, int)) and not isinstance(v, bool)
    }
    return psycopg.conninfo.make_conninfo("", **kept)


@contextmanager
def fresh_connections() -> Iterator[None]:
    """Around one task run on a worker thread: drop connections that broke or outlived
    `CONN_MAX_AGE` before, and release them per that setting after, as a request would."""
    close_old_connections()
    try:
        yield
    finally:
        close_old_connections()
