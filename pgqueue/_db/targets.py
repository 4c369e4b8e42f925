"""Drivers: run a plan's steps on a connection, sync or async.

A target wraps what the caller handed us (a psycopg connection, a SQLAlchemy Session or
Connection) or one of pgqueue's own connections, and runs one step at a time. `drive` and
`drive_async` are the only loops over a plan; they differ by one `await`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

import psycopg

from .._core.plan import AwaitNotify, DuplicateKey, Listen, Pipeline, Plan, Query, Step
from ..errors import QueueFull, ValidationError
from .queries import Queries

T = TypeVar("T")
TUPLES_OK = psycopg.pq.ExecStatus.TUPLES_OK


class SyncTarget(Protocol):
    def run(self, step: Step) -> Any: ...


class AsyncTarget(Protocol):
    async def run(self, step: Step) -> Any: ...


def queue_full(exc: BaseException | None) -> QueueFull | None:
    """The QueueFull an enqueue function raised (SQLSTATE PGQ01, its DETAIL a JSON object
    with queue, depth and max_depth), or None for any other error."""
    if not isinstance(exc, psycopg.Error) or exc.sqlstate != QueueFull.SQLSTATE:
        return None
    try:
        detail = json.loads(exc.diag.message_detail or "{}")
        return QueueFull(str(detail["queue"]), int(detail["depth"]), int(detail["max_depth"]))
    except (ValueError, KeyError, TypeError):
        return QueueFull("?", -1, -1)


def _as_dicts(names: list[str], rows: list[Any]) -> list[dict[str, Any]]:
    return [dict(zip(names, row, strict=True)) for row in rows]


@contextmanager
def _psycopg_errors() -> Iterator[None]:
    """The driver's errors that mean something to a plan or to the caller."""
    try:
        yield
    except psycopg.errors.UniqueViolation as exc:
        raise DuplicateKey(str(exc)) from exc
    except psycopg.Error as exc:
        full = queue_full(exc)
        if full is not None:
            raise full from exc
        raise


def _has_rows(cur: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> bool:
    # The result's status, not `description`, which builds a Column per field.
    return cur.pgresult is not None and cur.pgresult.status == TUPLES_OK


def _shaped(cur: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any], step: Query, rows: Any) -> Any:
    """Row tuples, or dicts by column name when the step asks for `columns`."""
    if not step.columns:
        return rows
    return _as_dicts([c.name for c in cur.description or ()], rows)


def _result(cur: psycopg.Cursor[Any], step: Query) -> Any:
    return _shaped(cur, step, cur.fetchall()) if _has_rows(cur) else []


async def _result_async(cur: psycopg.AsyncCursor[Any], step: Query) -> Any:
    return _shaped(cur, step, await cur.fetchall()) if _has_rows(cur) else []


class PsycopgTarget:
    """A psycopg Connection: the caller's (their transaction) or one of pgqueue's. It runs
    queries only: waiting for notifications is the shared listener's (`listener.py`)."""

    def __init__(self, conn: psycopg.Connection[Any], queries: Queries) -> None:
        self.conn = conn
        self.queries = queries

    def run(self, step: Step) -> Any:
        if isinstance(step, Query):
            with _psycopg_errors():
                cur = self.conn.execute(self.queries[step.name], step.params)
            return _result(cur, step)
        if isinstance(step, Pipeline):
            return self._pipeline(step)
        return _no_listen(step)

    def _pipeline(self, step: Pipeline) -> list[Any]:
        sent: list[tuple[Query, psycopg.Cursor[Any]]] = []
        with _psycopg_errors(), self.conn.pipeline() as pipeline:
            # Each query goes out as it is built; the next one is built meanwhile.
            for query in step.queries:
                sent.append((query, self.conn.execute(self.queries[query.name], query.params)))
            pipeline.sync()
            return [_result(cur, query) for query, cur in sent]


class AsyncPsycopgTarget:
    def __init__(self, conn: psycopg.AsyncConnection[Any], queries: Queries) -> None:
        self.conn = conn
        self.queries = queries

    async def run(self, step: Step) -> Any:
        if isinstance(step, Query):
            with _psycopg_errors():
                cur = await self.conn.execute(self.queries[step.name], step.params)
            return await _result_async(cur, step)
        if isinstance(step, Pipeline):
            return await self._pipeline(step)
        return _no_listen(step)

    async def _pipeline(self, step: Pipeline) -> list[Any]:
        sent: list[tuple[Query, psycopg.AsyncCursor[Any]]] = []
        with _psycopg_errors():
            async with self.conn.pipeline() as pipeline:
                for query in step.queries:
                    cur = await self.conn.execute(self.queries[query.name], query.params)
                    sent.append((query, cur))
                await pipeline.sync()
                return [await _result_async(cur, query) for query, cur in sent]


class SqlAlchemyTarget:
    """A SQLAlchemy Session or Connection: statements join its transaction; it never LISTENs
    (a caller's transaction is not a place to wait for notifications)."""

    def __init__(self, session: Any, queries: Queries) -> None:
        self.session = session
        self.queries = queries

    def run(self, step: Step) -> Any:
        if isinstance(step, Pipeline):
            return [self.run(query) for query in step.queries]
        if not isinstance(step, Query):
            return _no_listen(step)
        conn = self.session.connection() if hasattr(self.session, "get_bind") else self.session
        from sqlalchemy.exc import DBAPIError, IntegrityError

        try:
            result = conn.exec_driver_sql(self.queries[step.name], _params(step.params))
        except IntegrityError as exc:
            if isinstance(exc.orig, psycopg.errors.UniqueViolation):
                raise DuplicateKey(str(exc.orig)) from exc
            raise
        except DBAPIError as exc:
            full = queue_full(exc.orig)
            if full is not None:
                raise full from exc
            raise
        if not result.returns_rows:
            return []
        rows = [tuple(r) for r in result.fetchall()]
        return _as_dicts(list(result.keys()), rows) if step.columns else rows


class AsyncSqlAlchemyTarget:
    def __init__(self, session: Any, queries: Queries) -> None:
        self.session = session
        self.queries = queries

    async def run(self, step: Step) -> Any:
        if isinstance(step, Pipeline):
            return [await self.run(query) for query in step.queries]
        if not isinstance(step, Query):
            return _no_listen(step)
        session = self.session
        conn = (await session.connection()) if hasattr(session, "get_bind") else session
        from sqlalchemy.exc import DBAPIError, IntegrityError

        try:
            result = await conn.exec_driver_sql(self.queries[step.name], _params(step.params))
        except IntegrityError as exc:
            if isinstance(exc.orig, psycopg.errors.UniqueViolation):
                raise DuplicateKey(str(exc.orig)) from exc
            raise
        except DBAPIError as exc:
            full = queue_full(exc.orig)
            if full is not None:
                raise full from exc
            raise
        if not result.returns_rows:
            return []
        rows = [tuple(r) for r in result.fetchall()]
        return _as_dicts(list(result.keys()), rows) if step.columns else rows


def _params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(params) if params else {}


def _no_listen(step: Step) -> Any:
    """A query target never listens: a Listen is answered "not listening" (the plan polls)."""
    if isinstance(step, Listen):
        return False
    if isinstance(step, AwaitNotify):
        raise TypeError("a query target cannot wait for notifications")
    raise TypeError(f"unknown plan step {step!r}")


def _sqlalchemy_kind(obj: Any) -> str | None:
    """'sync' or 'async' for a SQLAlchemy Session or Connection (subclasses included).

    Imported only when the object could be one of SQLAlchemy's own (an app's Session
    subclass lives in the app's module)."""
    if not any(c.__module__.startswith("sqlalchemy") for c in type(obj).__mro__):
        return None
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session

    if isinstance(obj, (Session, Connection)):
        return "sync"
    try:
        from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
    except ImportError:  # the asyncio extension needs greenlet
        return None
    if isinstance(obj, (AsyncSession, AsyncConnection)):
        return "async"
    return None


_EXPECTED = "a psycopg {conn}Connection or a SQLAlchemy {sa}Session/{sa}Connection"


def sync_target(obj: Any, queries: Queries) -> SyncTarget:
    """The target for a caller's `conn=` / `session=`; a clear error for anything else."""
    if isinstance(obj, psycopg.Connection):
        return PsycopgTarget(obj, queries)
    kind = _sqlalchemy_kind(obj)
    if kind == "sync":
        return SqlAlchemyTarget(obj, queries)
    hint = (
        " (use enqueue_async and friends for async connections)"
        if (isinstance(obj, psycopg.AsyncConnection) or kind == "async")
        else ""
    )
    raise ValidationError(
        f"expected {_EXPECTED.format(conn='', sa='')}, got {type(obj).__name__}{hint}"
    )


def async_target(obj: Any, queries: Queries) -> AsyncTarget:
    if isinstance(obj, psycopg.AsyncConnection):
        return AsyncPsycopgTarget(obj, queries)
    kind = _sqlalchemy_kind(obj)
    if kind == "async":
        return AsyncSqlAlchemyTarget(obj, queries)
    hint = (
        " (use the sync methods for sync connections)"
        if (isinstance(obj, psycopg.Connection) or kind == "sync")
        else ""
    )
    raise ValidationError(
        f"expected {_EXPECTED.format(conn='Async', sa='Async')}, got {type(obj).__name__}{hint}"
    )


def drive(plan: Plan[T], target: SyncTarget, first: Step) -> T:
    """Run a plan whose first step was already taken (`first`) to its return value."""
    step = first
    try:
        while True:
            try:
                result = target.run(step)
            except DuplicateKey as exc:
                step = plan.throw(exc)
                continue
            step = plan.send(result)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def drive_async(plan: Plan[T], target: AsyncTarget, first: Step) -> T:
    step = first
    try:
        while True:
            try:
                result = await target.run(step)
            except DuplicateKey as exc:
                step = plan.throw(exc)
                continue
            step = plan.send(result)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
