"""The public client: an App holds the task registry and enqueues, inspects and runs jobs."""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from . import _sql
from ._logging import redact, redact_keys_from_env
from ._policy import DEFAULT_RETRY, RetryPolicy
from ._validate import (
    check_int,
    check_name,
    check_schema,
    check_seconds,
    encode_args,
)
from .errors import ConfigurationError, JobFailed, JobNotFound, UnknownTask, ValidationError
from .types import FINISHED_STATES, JobInfo, JobState, QueueStats

if TYPE_CHECKING:
    from ._worker import Worker

P = ParamSpec("P")
R = TypeVar("R")

#: Rows per statement in `enqueue_many`: big enough to amortise the round trip, small enough
#: that one statement's arrays stay a few MB.
ENQUEUE_CHUNK = 5000
#: Argument-name sets remembered per task as known to fit its function.
MAX_REMEMBERED_SHAPES = 256

_PENDING = object()


def _normalize_dsn(dsn: str) -> str:
    """Accept SQLAlchemy-style URLs (`postgresql+psycopg://`) as well as libpq ones."""
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgres+psycopg://"):
        if dsn.startswith(prefix):
            return "postgresql://" + dsn[len(prefix) :]
    return dsn


def resolve_dsn(dsn: str | None) -> str:
    found = dsn or os.environ.get("PGQUEUE_DSN") or os.environ.get("DATABASE_URL")
    if not found:
        raise ConfigurationError(
            "no database configured: pass App(dsn) or App(pool=...), or set PGQUEUE_DSN"
            " (DATABASE_URL is read too)"
        )
    return _normalize_dsn(found)


@dataclass(frozen=True)
class EnqueueOptions:
    """Per-call overrides of a task's defaults; None means "use the task's default"."""

    queue: str | None = None
    priority: int | None = None
    delay: float | None = None
    run_at: datetime | None = None
    unique_key: str | None = None
    max_attempts: int | None = None
    conn: Any = None
    session: Any = None

    def validated(self) -> EnqueueOptions:
        if self.queue is not None:
            check_name("queue", self.queue)
        if self.priority is not None:
            check_int("priority", self.priority)
        if self.delay is not None:
            check_seconds("delay", self.delay)
        if self.run_at is not None:
            if not isinstance(self.run_at, datetime):
                raise ValidationError(f"run_at must be a datetime, not {self.run_at!r}")
            if self.run_at.tzinfo is None:
                raise ValidationError(
                    "run_at must be timezone-aware (naive datetimes are ambiguous)"
                )
            if self.delay is not None:
                raise ValidationError("pass delay or run_at, not both")
        if self.unique_key is not None and (
            not isinstance(self.unique_key, str) or not self.unique_key or "\x00" in self.unique_key
        ):
            raise ValidationError(f"unique_key must be a non-empty string, not {self.unique_key!r}")
        if self.max_attempts is not None:
            check_int("max_attempts", self.max_attempts, minimum=1)
        if self.conn is not None and self.session is not None:
            raise ValidationError("pass conn or session, not both")
        return self


@dataclass
class Job:
    """A handle on an enqueued job."""

    id: int
    duplicate: bool
    app: App

    def info(self) -> JobInfo:
        return self.app.get_job(self.id)

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the job finishes; return its result or raise JobFailed / TimeoutError.

        Wakes on the NOTIFY that workers send when they record outcomes, re-checking the row
        at most every few seconds in case a notification is lost, so it never busy-polls.
        """
        return self.app._wait(self.id, timeout)

    async def wait_async(self, timeout: float | None = None) -> Any:
        return await self.app._wait_async(self.id, timeout)


class _Enqueuer:
    """Shared by Task and TaskCall: turns (task, kwargs, options) into an enqueue."""

    app: App
    name: str
    defaults: EnqueueOptions
    timeout: float | None

    def _params(self, kwargs: Mapping[str, Any], opts: EnqueueOptions) -> dict[str, Any]:
        return {
            "task": self.name,
            "args": encode_args(kwargs),
            "queue": opts.queue or self.defaults.queue or "default",
            "priority": opts.priority
            if opts.priority is not None
            else (self.defaults.priority or 0),
            "run_at": opts.run_at,
            "delay": opts.delay,
            "unique_key": opts.unique_key,
            "max_attempts": opts.max_attempts or self.defaults.max_attempts,
            "timeout": self.timeout,
        }


class Task(_Enqueuer, Generic[P, R]):
    """A registered function that can be enqueued by name and run by a worker."""

    def __init__(
        self,
        app: App,
        fn: Callable[P, R],
        *,
        name: str,
        queue: str,
        priority: int,
        max_attempts: int,
        timeout: float | None,
        retry: RetryPolicy,
    ) -> None:
        self.app = app
        self.fn = fn
        self.name = check_name("task", name)
        self.defaults = EnqueueOptions(
            queue=queue, priority=priority, max_attempts=max_attempts
        ).validated()
        self.timeout = None if timeout is None else check_seconds("timeout", timeout) or None
        self.retry = retry
        self.is_async = inspect.iscoroutinefunction(fn)
        self.signature = inspect.signature(fn)
        self._accepted_names: set[frozenset[str]] = set()

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.defaults.queue}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function directly, in this process, without a queue."""
        return self.fn(*args, **kwargs)

    def check_arguments(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        """Raise TypeError unless the call fits the function (enqueue side)."""
        if args:
            raise TypeError(
                f"task {self.name} takes keyword arguments only (they are stored as JSON);"
                f" got {len(args)} positional"
            )
        self._bind_names(kwargs, f"task {self.name}: ")

    def check_argument_names(self, kwargs: Mapping[str, Any]) -> None:
        """Raise TypeError unless a row's arguments fit the function (worker side)."""
        self._bind_names(kwargs, f"arguments {sorted(kwargs)} do not match task {self.name}: ")

    def _bind_names(self, kwargs: Mapping[str, Any], error_prefix: str) -> None:
        # Whether keyword arguments bind depends only on their names, so each accepted set of
        # names is remembered (up to a bound, for functions taking **kwargs) and the
        # signature is consulted once per shape, not once per job.
        names = frozenset(kwargs)
        if names in self._accepted_names:
            return
        try:
            self.signature.bind(**kwargs)
        except TypeError as exc:
            raise TypeError(f"{error_prefix}{exc}") from None
        if len(self._accepted_names) < MAX_REMEMBERED_SHAPES:
            self._accepted_names.add(names)

    def options(self, **options: Any) -> TaskCall[P, R]:
        return TaskCall(self, EnqueueOptions(**options).validated())

    def enqueue(self, *args: Any, **kwargs: Any) -> Job:
        return TaskCall(self, EnqueueOptions()).enqueue(*args, **kwargs)

    async def enqueue_async(self, *args: Any, **kwargs: Any) -> Job:
        return await TaskCall(self, EnqueueOptions()).enqueue_async(*args, **kwargs)

    def enqueue_many(self, items: Iterable[Mapping[str, Any]]) -> list[Job]:
        return TaskCall(self, EnqueueOptions()).enqueue_many(items)

    async def enqueue_many_async(self, items: Iterable[Mapping[str, Any]]) -> list[Job]:
        return await TaskCall(self, EnqueueOptions()).enqueue_many_async(items)


class TaskCall(Generic[P, R]):
    """A task with per-call options bound (`task.options(...)`)."""

    def __init__(self, task: Task[P, R], opts: EnqueueOptions) -> None:
        self.task = task
        self.opts = opts

    def options(self, **options: Any) -> TaskCall[P, R]:
        return TaskCall(self.task, replace(self.opts, **options).validated())

    def enqueue(self, *args: Any, **kwargs: Any) -> Job:
        return self._submit(args, kwargs)

    async def enqueue_async(self, *args: Any, **kwargs: Any) -> Job:
        return await self._submit_async(args, kwargs)

    def _submit(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Job:
        self.task.check_arguments(args, kwargs)
        return self.task.app._enqueue_one(self.task._params(kwargs, self.opts), self.opts)

    async def _submit_async(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Job:
        self.task.check_arguments(args, kwargs)
        return await self.task.app._enqueue_one_async(
            self.task._params(kwargs, self.opts), self.opts
        )

    def _many_params(self, items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        if self.opts.unique_key is not None:
            raise ValidationError(
                "unique_key applies to one job; it cannot be used with enqueue_many"
            )
        rows = []
        for kwargs in items:
            if not isinstance(kwargs, Mapping):
                raise ValidationError(
                    f"enqueue_many takes mappings of keyword arguments, not {kwargs!r}"
                )
            self.task.check_arguments((), kwargs)
            rows.append(self.task._params(kwargs, self.opts))
        return rows

    def enqueue_many(self, items: Iterable[Mapping[str, Any]]) -> list[Job]:
        return self.task.app._enqueue_many(self._many_params(items), self.opts)

    async def enqueue_many_async(self, items: Iterable[Mapping[str, Any]]) -> list[Job]:
        return await self.task.app._enqueue_many_async(self._many_params(items), self.opts)


class _UnregisteredTask(Task[Any, Any]):
    """Stands in for a task another process registers: any keyword arguments are accepted."""

    def __init__(self, app: App, name: str) -> None:
        super().__init__(
            app,
            _accept_any,
            name=name,
            queue="default",
            priority=0,
            max_attempts=3,
            timeout=None,
            retry=DEFAULT_RETRY,
        )
        self.defaults = EnqueueOptions()


def _accept_any(**kwargs: Any) -> None:
    raise UnknownTask("this task is not registered in this process; a worker runs it")


# --- how a query reaches the caller's transaction ---------------------------------------


def _pool_conninfo(pool: ConnectionPool[Any]) -> str:
    """Workers and waiters open their own connections to the pool's database."""
    info = pool.conninfo
    return info() if callable(info) else info


def _pool_kwargs(pool: ConnectionPool[Any]) -> dict[str, Any]:
    info = pool.kwargs
    kwargs = (info() if callable(info) else info) or {}
    return {k: v for k, v in kwargs.items() if k != "autocommit"}


def _mapping(args: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if args is None:
        return {}
    if not isinstance(args, Mapping):
        raise ValidationError(f"task arguments must be a mapping of names to values, not {args!r}")
    return args


def _is_sqlalchemy(obj: Any) -> bool:
    """A SQLAlchemy Session or Connection (sync or async), subclasses included.

    psycopg connections are recognised first, so SQLAlchemy is imported only when the object
    could be one of its own (an app's Session subclass lives in the app's module)."""
    if isinstance(obj, (psycopg.Connection, psycopg.AsyncConnection)):
        return False
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session

    if isinstance(obj, (Session, Connection)):
        return True
    try:
        from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
    except ImportError:  # the asyncio extension needs greenlet
        return False
    return isinstance(obj, (AsyncSession, AsyncConnection))


def _chunk_params(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Parameters of job_enqueue_many: the rows of one enqueue_many call differ only in their
    arguments (one task, one set of options), which travel as a single JSON array."""
    first = rows[0]
    return {
        **{k: first[k] for k in _SHARED_FIELDS},
        "args": "[" + ",".join([r["args"] for r in rows]) + "]",
    }


_SHARED_FIELDS = ("task", "queue", "priority", "run_at", "delay", "max_attempts", "timeout")


def _queues_to_wake(rows: Sequence[dict[str, Any]]) -> list[str]:
    # A job with a run_at or delay may still be due at once; waking for it costs one spurious
    # poll at worst, while missing it would cost a poll interval.
    return sorted({r["queue"] for r in rows})


class _SyncTarget:
    """Runs queries on a psycopg Connection, a SQLAlchemy Session/Connection, or the pool."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def fetch(self, query: str, params: dict[str, Any] | None) -> list[tuple[Any, ...]]:
        conn = self.conn
        if _is_sqlalchemy(conn):
            sa_conn = conn.connection() if hasattr(conn, "get_bind") else conn
            result = sa_conn.exec_driver_sql(query, params or {})
            return [tuple(r) for r in result.fetchall()] if result.returns_rows else []
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


class _AsyncTarget:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def fetch(self, query: str, params: dict[str, Any] | None) -> list[tuple[Any, ...]]:
        conn = self.conn
        if _is_sqlalchemy(conn):
            sa_conn = (await conn.connection()) if hasattr(conn, "get_bind") else conn
            result = await sa_conn.exec_driver_sql(query, params or {})
            return [tuple(r) for r in result.fetchall()] if result.returns_rows else []
        cur = await conn.execute(query, params)
        return await cur.fetchall() if cur.description else []


def _job_info(row: Sequence[Any]) -> JobInfo:
    (
        id_,
        task,
        queue,
        state,
        priority,
        attempt,
        max_attempts,
        args,
        result,
        errors,
        unique_key,
        rescue_count,
        created_at,
        run_at,
        started_at,
        finished_at,
        worker,
    ) = row
    return JobInfo(
        id=id_,
        task=task,
        queue=queue,
        state=JobState(state),
        priority=priority,
        attempt=attempt,
        max_attempts=max_attempts,
        args=args,
        result=result,
        errors=list(errors or []),
        unique_key=unique_key,
        rescue_count=rescue_count,
        created_at=created_at,
        run_at=run_at,
        started_at=started_at,
        finished_at=finished_at,
        worker=worker,
    )


class App:
    """A pgqueue application: where jobs live (a DSN or pool, and a schema) and its tasks.

    Create one per process and share it; it opens connections lazily, so importing a module
    that defines an App (a worker's `package.module:app`) never touches the database.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        pool: ConnectionPool[Any] | None = None,
        schema: str | None = None,
        redact_keys: Iterable[str] | None = None,
    ) -> None:
        if schema is None:
            schema = os.environ.get("PGQUEUE_SCHEMA") or "pgqueue"
        self.schema = check_schema(schema)
        if pool is not None and dsn is not None:
            raise ConfigurationError("pass a dsn or a pool, not both")
        self._external_pool = pool
        self.dsn = resolve_dsn(dsn) if pool is None else _pool_conninfo(pool)
        #: Connection options beyond the DSN (a password, sslmode, ...): a pool passed in may
        #: carry them in its `kwargs`, and every connection pgqueue opens must use them too.
        self.connect_kwargs: dict[str, Any] = _pool_kwargs(pool) if pool is not None else {}
        self.queries = _sql.Queries(self.schema)
        self.tasks: dict[str, Task[Any, Any]] = {}
        self._pool: ConnectionPool[Any] | None = pool
        self._apools: dict[asyncio.AbstractEventLoop, AsyncConnectionPool[Any]] = {}
        self._lock = threading.Lock()
        self._schema_ok = False
        #: Argument keys whose values logs and the CLI show as ***; default: common secrets
        #: (password, token, api_key, ...), or $PGQUEUE_REDACT_KEYS.
        self.redact_keys = (
            redact_keys_from_env()
            if redact_keys is None
            else frozenset(k.lower() for k in redact_keys)
        )
        #: Set by `pgqueue.testing.inline`: run tasks at enqueue time instead of storing them.
        self._inline: Callable[[dict[str, Any]], Job] | None = None

    def __repr__(self) -> str:
        return f"<pgqueue.App schema={self.schema!r} tasks={len(self.tasks)}>"

    # --- tasks --------------------------------------------------------------------------

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        queue: str = "default",
        priority: int = 0,
        max_attempts: int = 3,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(
        self,
        fn: Callable[P, R] | None = None,
        /,
        *,
        name: str | None = None,
        queue: str = "default",
        priority: int = 0,
        max_attempts: int = 3,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
        """Register a function as a task; usable as `@app.task` or `@app.task(...)`.

        The task's name (default `module.function`) is what rows store, so renaming a function
        strands its queued jobs unless `name=` keeps the old one.
        """

        def register(func: Callable[P, R]) -> Task[P, R]:
            task_name = name or f"{func.__module__}.{func.__name__}"
            existing = self.tasks.get(task_name)
            if existing is not None and existing.fn is not func:
                raise ValidationError(
                    f"a different function is already registered as {task_name!r}"
                )
            task: Task[P, R] = Task(
                self,
                func,
                name=task_name,
                queue=queue,
                priority=priority,
                max_attempts=max_attempts,
                timeout=timeout,
                retry=retry or DEFAULT_RETRY,
            )
            self.tasks[task_name] = task
            return task

        return register(fn) if fn is not None else register

    # --- connections --------------------------------------------------------------------

    @property
    def pool(self) -> ConnectionPool[Any]:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    # One direct connection first: a database that cannot be reached fails
                    # now, with libpq's own reason, instead of after the pool's 30 s wait.
                    psycopg.connect(self.dsn, **self.connect_kwargs).close()
                    self._pool = ConnectionPool(
                        self.dsn,
                        min_size=1,
                        max_size=8,
                        open=True,
                        name="pgqueue",
                        kwargs={**self.connect_kwargs, "autocommit": True},
                    )
        return self._pool

    async def _apool(self) -> AsyncConnectionPool[Any]:
        loop = asyncio.get_running_loop()
        pool = self._apools.get(loop)
        if pool is None:
            pool = AsyncConnectionPool(
                self.dsn,
                min_size=1,
                max_size=8,
                open=False,
                name="pgqueue",
                kwargs={**self.connect_kwargs, "autocommit": True},
            )
            await pool.open()
            self._apools[loop] = pool
        return pool

    def close(self) -> None:
        """Close the pools this App opened (not one passed in with `pool=`)."""
        if self._pool is not None and self._pool is not self._external_pool:
            self._pool.close()
            self._pool = None

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        pool = self._apools.pop(loop, None)
        if pool is not None:
            await pool.close()

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> psycopg.Connection[Any]:
        """A new dedicated connection (autocommit), for LISTEN or long-lived sessions."""
        return psycopg.connect(self.dsn, autocommit=True, **self.connect_kwargs)

    def migrate(self) -> list[int]:
        """Apply pending migrations (same as `pgqueue migrate`); return the versions applied."""
        applied = _sql.migrate(self.dsn, self.schema, self.connect_kwargs)
        self._schema_ok = True
        return applied

    def _ensure_schema(self, target: _SyncTarget) -> None:
        if not self._schema_ok:
            _sql.check_schema(target.fetch, self.queries)
            self._schema_ok = True

    async def _ensure_schema_async(self, target: _AsyncTarget) -> None:
        if not self._schema_ok:
            await _sql.check_schema_async(target.fetch, self.queries)
            self._schema_ok = True

    def _run(self, query: str, params: dict[str, Any] | None) -> list[tuple[Any, ...]]:
        """One statement on a pooled connection, committed on return.

        pgqueue's own pools are in autocommit mode: a single statement is atomic by itself,
        and an explicit transaction would cost two more round trips (BEGIN and COMMIT) on
        every enqueue.
        """
        with self._checked() as conn:
            return _SyncTarget(conn).fetch(query, params)

    @contextmanager
    def _checked(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection to a database known to be migrated (checked once per App)."""
        with self.pool.connection() as conn:
            self._ensure_schema(_SyncTarget(conn))
            yield conn

    async def _run_async(self, query: str, params: dict[str, Any] | None) -> list[tuple[Any, ...]]:
        pool = await self._apool()
        async with pool.connection() as conn:
            target = _AsyncTarget(conn)
            await self._ensure_schema_async(target)
            return await target.fetch(query, params)

    # --- enqueue ------------------------------------------------------------------------

    def enqueue(self, name: str, args: Mapping[str, Any] | None = None, **options: Any) -> Job:
        """Enqueue by task name, with no need to import the task; its defaults apply if known."""
        return self._by_name_call(name, options)._submit((), _mapping(args))

    async def enqueue_async(
        self, name: str, args: Mapping[str, Any] | None = None, **options: Any
    ) -> Job:
        return await self._by_name_call(name, options)._submit_async((), _mapping(args))

    def enqueue_many(
        self, name: str, items: Iterable[Mapping[str, Any]], **options: Any
    ) -> list[Job]:
        """Bulk enqueue by task name: one statement per chunk, all or nothing."""
        return self._by_name_call(name, options).enqueue_many(items)

    async def enqueue_many_async(
        self, name: str, items: Iterable[Mapping[str, Any]], **options: Any
    ) -> list[Job]:
        return await self._by_name_call(name, options).enqueue_many_async(items)

    def _by_name_call(self, name: str, options: dict[str, Any]) -> TaskCall[Any, Any]:
        task = self.tasks.get(name) or _UnregisteredTask(self, name)
        return TaskCall(task, EnqueueOptions(**options).validated())

    def _enqueue_one(self, params: dict[str, Any], opts: EnqueueOptions) -> Job:
        if self._inline is not None:
            return self._inline(params)
        query = self.queries["job_enqueue"]
        external = opts.conn if opts.conn is not None else opts.session
        if external is None:
            rows = self._run(query, params)
        else:
            target = _SyncTarget(external)
            self._ensure_schema(target)
            rows = target.fetch(query, params)
        return Job(id=rows[0][0], duplicate=rows[0][1], app=self)

    async def _enqueue_one_async(self, params: dict[str, Any], opts: EnqueueOptions) -> Job:
        if self._inline is not None:
            return self._inline(params)
        query = self.queries["job_enqueue"]
        external = opts.conn if opts.conn is not None else opts.session
        if external is None:
            rows = await self._run_async(query, params)
        else:
            target = _AsyncTarget(external)
            await self._ensure_schema_async(target)
            rows = await target.fetch(query, params)
        return Job(id=rows[0][0], duplicate=rows[0][1], app=self)

    def _insert_chunks(self, target: _SyncTarget, rows: Sequence[dict[str, Any]]) -> list[Job]:
        self._ensure_schema(target)
        jobs: list[Job] = []
        for start in range(0, len(rows), ENQUEUE_CHUNK):
            chunk = rows[start : start + ENQUEUE_CHUNK]
            ids = target.fetch(self.queries["job_enqueue_many"], _chunk_params(chunk))
            jobs.extend(Job(id=r[0], duplicate=False, app=self) for r in sorted(ids))
        if rows:
            target.fetch(self.queries["queue_notify"], {"queues": _queues_to_wake(rows)})
        return jobs

    def _enqueue_many(self, rows: Sequence[dict[str, Any]], opts: EnqueueOptions) -> list[Job]:
        if self._inline is not None:
            return [self._inline(row) for row in rows]
        external = opts.conn if opts.conn is not None else opts.session
        if external is not None:
            return self._insert_chunks(_SyncTarget(external), rows)
        with self.pool.connection() as conn, conn.transaction():  # all or nothing
            return self._insert_chunks(_SyncTarget(conn), rows)

    async def _insert_chunks_async(
        self, target: _AsyncTarget, rows: Sequence[dict[str, Any]]
    ) -> list[Job]:
        await self._ensure_schema_async(target)
        jobs: list[Job] = []
        for start in range(0, len(rows), ENQUEUE_CHUNK):
            chunk = rows[start : start + ENQUEUE_CHUNK]
            ids = await target.fetch(self.queries["job_enqueue_many"], _chunk_params(chunk))
            jobs.extend(Job(id=r[0], duplicate=False, app=self) for r in sorted(ids))
        if rows:
            await target.fetch(self.queries["queue_notify"], {"queues": _queues_to_wake(rows)})
        return jobs

    async def _enqueue_many_async(
        self, rows: Sequence[dict[str, Any]], opts: EnqueueOptions
    ) -> list[Job]:
        if self._inline is not None:
            return [self._inline(row) for row in rows]
        external = opts.conn if opts.conn is not None else opts.session
        if external is not None:
            return await self._insert_chunks_async(_AsyncTarget(external), rows)
        pool = await self._apool()
        async with pool.connection() as conn, conn.transaction():  # all or nothing
            return await self._insert_chunks_async(_AsyncTarget(conn), rows)

    # --- inspect and steer ----------------------------------------------------------------

    def get_job(self, job_id: int) -> JobInfo:
        rows = self._run(self.queries["job_get"], {"id": check_int("job id", job_id, bits=64)})
        if not rows:
            raise JobNotFound(f"no job with id {job_id}")
        return _job_info(rows[0])

    async def get_job_async(self, job_id: int) -> JobInfo:
        rows = await self._run_async(
            self.queries["job_get"], {"id": check_int("job id", job_id, bits=64)}
        )
        if not rows:
            raise JobNotFound(f"no job with id {job_id}")
        return _job_info(rows[0])

    def cancel(self, job_id: int) -> bool:
        """Cancel a job; return False if it is already finished (or does not exist).

        A job that has not started is `cancelled` at once. A running one is asked to stop:
        its worker cancels it at its next heartbeat (an async task is interrupted; a sync
        task's thread cannot be, so it runs on but its outcome is discarded) and records it
        `cancelled`.
        """
        rows = self._run(self.queries["job_cancel"], {"id": check_int("job id", job_id, bits=64)})
        return bool(rows)

    def retry(self, job_id: int) -> bool:
        """Run a failed, cancelled or waiting job again now; return False if it cannot be.

        Raises ValidationError when another unfinished job holds the same unique_key.
        """
        try:
            rows = self._run(
                self.queries["job_retry"], {"id": check_int("job id", job_id, bits=64)}
            )
        except psycopg.errors.UniqueViolation:
            raise ValidationError(
                f"job {job_id} cannot run again: an unfinished job holds its unique_key"
            ) from None
        return bool(rows)

    def retry_failed(self, queue: str | None = None) -> int:
        """Put every failed job (of one queue) back in line; return how many."""
        if queue is not None:
            check_name("queue", queue)
        return len(self._run(self.queries["job_retry_failed"], {"queue": queue}))

    def pause(self, queue: str) -> None:
        """Stop workers from claiming jobs of this queue (from their next claim on)."""
        self._run(
            self.queries["queue_pause"], {"queue": check_name("queue", queue), "paused": True}
        )

    def resume(self, queue: str) -> None:
        self._run(
            self.queries["queue_pause"], {"queue": check_name("queue", queue), "paused": False}
        )
        self._run(self.queries["queue_notify"], {"queues": [queue]})

    def prune(
        self,
        older_than: float | None = None,
        *,
        batch: int = 1000,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Delete finished jobs past their retention (or older than `older_than` seconds).

        Works in batches of `batch` rows, each its own short transaction, so it never holds
        one long lock; live jobs are never touched. Returns how many were deleted.
        """
        if older_than is not None:
            check_seconds("older_than", older_than)
        check_int("batch", batch, minimum=1)
        total = 0
        while True:
            rows = self._run(self.queries["job_prune"], {"older_than": older_than, "batch": batch})
            total += len(rows)
            if progress is not None:
                progress(total)
            if len(rows) < batch:
                return total

    def list_jobs(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        task: str | None = None,
        older_than: float | None = None,
        newer_than: float | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Jobs from the `job_status` view, newest first; every filter is optional."""
        if state is not None:
            JobState(state)  # ValueError names the bad state
        for kind, name in (("queue", queue), ("task", task)):
            if name is not None:
                check_name(kind, name)
        params = {
            "state": state,
            "queue": queue,
            "task": task,
            "older_than": older_than,
            "newer_than": newer_than,
            "limit": check_int("limit", limit, minimum=1),
        }
        return self._dicts("job_list", params)

    def stuck_jobs(self, limit: int = 50) -> list[dict[str, Any]]:
        """Rows of the `stuck_jobs` view: long-running, rescued or often-retried jobs."""
        return self._dicts("stuck_list", {"limit": check_int("limit", limit, minimum=1)})

    def workers(self) -> list[dict[str, Any]]:
        """Live worker processes, with heartbeat age, running jobs and leadership."""
        return self._dicts("worker_list", None)

    def throughput(self, bucket: float = 10.0, buckets: int = 30) -> list[tuple[int, int]]:
        """(completed, failed) per bucket of `bucket` seconds, oldest first."""
        rows = self._run(self.queries["throughput"], {"bucket": bucket, "buckets": buckets})
        by_age = {r[0]: (int(r[1]), int(r[2])) for r in rows}
        return [by_age.get(age, (0, 0)) for age in range(buckets - 1, -1, -1)]

    def recent_failures(self, limit: int = 10) -> list[dict[str, Any]]:
        return self._dicts("recent_failures", {"limit": check_int("limit", limit, minimum=1)})

    def _dicts(self, query: str, params: dict[str, Any] | None) -> list[dict[str, Any]]:
        """Rows of the named query as dicts keyed by column name (operator listings)."""
        with self._checked() as conn:
            cur = conn.execute(self.queries[query], params)
            names = [c.name for c in cur.description or []]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def redact(self, args: Any) -> Any:
        """`args` as logs and the CLI may show them: sensitive keys masked."""
        return redact(args, self.redact_keys)

    def unfinished(self, job_ids: Sequence[int]) -> int:
        """How many of these jobs are still to run (scheduled, available, running, retrying)."""
        rows = self._run(self.queries["job_count_unfinished"], {"ids": list(job_ids)})
        return int(rows[0][0])

    def queue_stats(self) -> list[QueueStats]:
        return [QueueStats(*row) for row in self._run(self.queries["queue_stats"], None)]

    # --- waiting ------------------------------------------------------------------------

    def _finished(self, info: JobInfo) -> Any:
        if info.state is JobState.COMPLETED:
            return info.result
        if info.state in FINISHED_STATES:
            raise JobFailed(info.id, info.state.value, info.last_error)
        return _PENDING

    def _wait(self, job_id: int, timeout: float | None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.connect() as conn:
            conn.execute(f"LISTEN {psycopg.sql.Identifier(self.queries.done_channel).as_string()}")
            while True:
                outcome = self._finished(self.get_job(job_id))
                if outcome is not _PENDING:
                    return outcome
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"job {job_id} did not finish within {timeout} s")
                # Wake on the first notification, or re-check after a while regardless.
                for _ in conn.notifies(timeout=min(remaining or 5.0, 5.0), stop_after=1):
                    pass

    async def _wait_async(self, job_id: int, timeout: float | None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        aconn = await psycopg.AsyncConnection.connect(
            self.dsn, autocommit=True, **self.connect_kwargs
        )
        async with aconn:
            channel = psycopg.sql.Identifier(self.queries.done_channel).as_string()
            await aconn.execute(f"LISTEN {channel}")
            while True:
                outcome = self._finished(await self.get_job_async(job_id))
                if outcome is not _PENDING:
                    return outcome
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"job {job_id} did not finish within {timeout} s")
                async for _ in aconn.notifies(timeout=min(remaining or 5.0, 5.0), stop_after=1):
                    pass

    # --- workers ------------------------------------------------------------------------

    def worker(self, **settings: Any) -> Worker:
        from ._worker import Worker

        return Worker(self, **settings)

    def run_worker(
        self,
        queues: Sequence[str] | None = None,
        concurrency: int = 16,
        burst: bool = False,
        **settings: Any,
    ) -> None:
        """Run a worker in this thread until it is stopped (or, with burst, runs dry)."""
        worker = self.worker(queues=queues, concurrency=concurrency, burst=burst, **settings)
        asyncio.run(worker.run())
