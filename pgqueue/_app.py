"""The public client: an App holds the task registry and where jobs live, and its methods
are thin sync and async shells over the plans in `pgqueue._core` (run by its Client)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar, overload

from ._app_flow import FlowMethods
from ._app_inspect import InspectMethods
from ._app_topics import TopicMethods, _mapping
from ._client import Client
from ._core import admin, catalog
from ._core.plan import Plan
from ._core.retry import DEFAULT_RETRY, RetryPolicy
from ._core.schedules import Schedule
from ._core.validate import check_schema
from ._db.migrate import migrate
from ._db.pools import ConnectionPool, Database
from ._db.queries import Queries
from ._logging import redact, redact_keys_from_env
from ._runtime.worker import Worker
from ._task import (
    MAX_REMEMBERED_SHAPES,
    NO_OPTIONS,
    EnqueueOptions,
    Job,
    Task,
    TaskCall,
    UnregisteredTask,
)
from .errors import ValidationError
from .types import JobInfo

P = ParamSpec("P")
R = TypeVar("R")


class App(TopicMethods, InspectMethods, FlowMethods):
    """A pgqueue application: where jobs live (a DSN or pool, and a schema) and its tasks.

    Create one per process and share it; it opens connections lazily, so importing a module
    that defines an App (a worker's `package.module:app`) never touches the database.

    Behind a transaction-mode pooler (PgBouncer) pass `prepared_statements=False` (or set
    `PGQUEUE_PREPARED_STATEMENTS=0`), and `listen_dsn` (or `PGQUEUE_LISTEN_DSN`), a direct
    connection for LISTEN; without one, workers and `job.wait()` poll.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        pool: ConnectionPool[Any] | None = None,
        schema: str | None = None,
        redact_keys: Iterable[str] | None = None,
        prepared_statements: bool | None = None,
        listen_dsn: str | None = None,
    ) -> None:
        if schema is None:
            schema = os.environ.get("PGQUEUE_SCHEMA") or "pgqueue"
        self.schema = check_schema(schema)
        self.database = Database(
            dsn, pool=pool, prepared_statements=prepared_statements, listen_dsn=listen_dsn
        )
        self.queries = Queries(self.schema)
        self.client = Client(self.database, self.queries)
        self.client.registration = self._registration
        self.tasks: dict[str, Task[Any, Any]] = {}
        self._unregistered: dict[str, UnregisteredTask] = {}
        #: Schedules declared with `periodic`, by name: written when a worker starts.
        self.declared_schedules: dict[str, Schedule] = {}
        #: Argument keys whose values logs and the CLI show as ***; default: common secrets
        #: (password, token, api_key, ...), or $PGQUEUE_REDACT_KEYS.
        self.redact_keys = (
            redact_keys_from_env()
            if redact_keys is None
            else frozenset(k.lower() for k in redact_keys)
        )

    def __repr__(self) -> str:
        return f"<pgqueue.App schema={self.schema!r} tasks={len(self.tasks)}>"

    @property
    def dsn(self) -> str:
        return self.database.dsn

    @dsn.setter
    def dsn(self, value: str) -> None:
        """The CLI's `--dsn` replaces the DSN of an App built from the environment."""
        self.database = Database(
            value,
            prepared_statements=self.database.prepared_statements,
            listen_dsn=self.database.direct_listen_dsn,
        )
        self.client = Client(self.database, self.queries)
        self.client.registration = self._registration

    @property
    def connect_kwargs(self) -> dict[str, Any]:
        return self.database.connect_kwargs

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
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        fail_on: tuple[type[BaseException], ...] = (),
        topics: Sequence[str] = (),
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(
        self,
        fn: Callable[P, R] | None = None,
        /,
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        fail_on: tuple[type[BaseException], ...] = (),
        topics: Sequence[str] = (),
    ) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
        """Register a function as a task; usable as `@app.task` or `@app.task(...)`.

        The task's name (default `module.function`) is what rows store, so renaming a function
        strands its queued jobs unless `name=` keeps the old one. Options left out take the
        database's defaults (queue `default`, priority 0, 3 attempts). Exceptions in
        `fail_on` fail the job at once, never retried. `topics` subscribes the task to topic
        patterns (see `subscribe`), written when a worker that has the task starts.
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
                fail_on=fail_on,
                topics=topics,
            )
            self.tasks[task_name] = task
            self.client.registered = False  # the catalog learns of it with the next statement
            return task

        return register(fn) if fn is not None else register

    def _registration(self) -> Plan[None]:
        """This App's tasks and redaction keys, for the catalog (`pgqueue tasks`)."""
        return catalog.register_all(
            self.tasks.values(), self.redact_keys, f"{socket.gethostname()}:{os.getpid()}"
        )

    def tasks_catalog(self) -> list[dict[str, Any]]:
        """Every task any worker or App registered, with its defaults (`pgqueue tasks`)."""
        return self.client.run(catalog.list_tasks())

    async def tasks_catalog_async(self) -> list[dict[str, Any]]:
        return await self.client.run_async(catalog.list_tasks())

    def stored_redact_keys(self) -> frozenset[str]:
        """The redaction keys every App configured (the database's union), and this one's."""
        return self.client.run(catalog.stored_redact_keys()) | self.redact_keys

    async def stored_redact_keys_async(self) -> frozenset[str]:
        return await self.client.run_async(catalog.stored_redact_keys()) | self.redact_keys

    # --- connections --------------------------------------------------------------------

    @property
    def pool(self) -> ConnectionPool[Any]:
        return self.database.pool

    def close(self) -> None:
        """Close every pool this App opened, sync and async (not one passed in with `pool=`),
        and its waiters' listener."""
        self.client.close()
        self.database.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.client.close)
        await self.database.aclose()

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> App:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def connect(self) -> Any:
        """A new dedicated psycopg connection (autocommit), for long-lived sessions."""
        return self.database.connect()

    async def connect_async(self) -> Any:
        return await self.database.aconnect()

    def migrate(self) -> list[int]:
        """Apply pending migrations (same as `pgqueue migrate`); return the versions applied."""
        applied = migrate(self.database, self.schema)
        self.client.schema_ok = True
        return applied

    async def migrate_async(self) -> list[int]:
        return await asyncio.to_thread(self.migrate)

    # --- enqueue ------------------------------------------------------------------------

    def enqueue(self, name: str, args: Mapping[str, Any] | None = None, **options: Any) -> Job:
        """Enqueue by task name, with no need to import the task; its defaults apply if known."""
        return self._by_name(name, options).enqueue(**_mapping(args))

    async def enqueue_async(
        self, name: str, args: Mapping[str, Any] | None = None, **options: Any
    ) -> Job:
        return await self._by_name(name, options).enqueue_async(**_mapping(args))

    def enqueue_many(
        self, name: str, items: Iterable[Mapping[str, Any]], **options: Any
    ) -> list[Job]:
        """Bulk enqueue by task name: one statement per chunk, all or nothing."""
        return self._by_name(name, options).enqueue_many(items)

    async def enqueue_many_async(
        self, name: str, items: Iterable[Mapping[str, Any]], **options: Any
    ) -> list[Job]:
        return await self._by_name(name, options).enqueue_many_async(items)

    def _by_name(self, name: str, options: dict[str, Any]) -> TaskCall[Any, Any]:
        task = self.tasks.get(name) or self._unregistered.get(name)
        if task is None:
            # Kept (up to a bound), so enqueueing by name does not rebuild a stand-in, and
            # its argument-shape cache, on every call.
            task = UnregisteredTask(self, name)
            if len(self._unregistered) < MAX_REMEMBERED_SHAPES:
                self._unregistered[name] = task
        return TaskCall(task, EnqueueOptions(**options).validated() if options else NO_OPTIONS)

    # --- inspect and steer ----------------------------------------------------------------

    def get_job(self, job_id: int) -> JobInfo:
        return self.client.run(admin.get_job(job_id))

    async def get_job_async(self, job_id: int) -> JobInfo:
        return await self.client.run_async(admin.get_job(job_id))

    def cancel(self, job_id: int) -> bool:
        """Cancel a job; return False if it is already finished (or does not exist).

        A job that has not started is `cancelled` at once. A running one is asked to stop:
        its worker cancels it at its next heartbeat (an async task is interrupted; a sync
        task's thread cannot be, so it runs on but its outcome is discarded) and records it
        `cancelled`.
        """
        return self.client.run(admin.cancel(job_id))

    async def cancel_async(self, job_id: int) -> bool:
        return await self.client.run_async(admin.cancel(job_id))

    def retry(self, job_id: int) -> bool:
        """Run a failed, cancelled or waiting job again now; return False if it cannot be.

        Raises ValidationError when another unfinished job holds the same unique_key.
        """
        return self.client.run(admin.retry(job_id))

    async def retry_async(self, job_id: int) -> bool:
        return await self.client.run_async(admin.retry(job_id))

    def retry_failed(
        self, queue: str | None = None, fresh: bool = False, task: str | None = None
    ) -> int:
        """Put every failed job (of one queue, of one task) back in line; return how many.

        `fresh` gives them a full attempt budget again (with backoff between attempts), for
        jobs that an outage failed; otherwise each gets one more attempt. Of failed jobs that
        share a unique_key only the newest is retried, and none whose key an unfinished job
        holds: the rest stay failed, so one duplicate never fails the whole retry."""
        return self.client.run(admin.retry_failed(queue, fresh, task))

    async def retry_failed_async(
        self, queue: str | None = None, fresh: bool = False, task: str | None = None
    ) -> int:
        return await self.client.run_async(admin.retry_failed(queue, fresh, task))

    def count_failed(self, queue: str | None = None, task: str | None = None) -> int:
        """How many failed jobs match: what `retry_failed` with these filters would retry."""
        return self.client.run(admin.count_failed(queue, task))

    async def count_failed_async(self, queue: str | None = None, task: str | None = None) -> int:
        return await self.client.run_async(admin.count_failed(queue, task))

    def count_unfinished(
        self, queue: str | None = None, task: str | None = None, state: str | None = None
    ) -> int:
        """How many unfinished jobs match: what `cancel_many` with these filters would touch."""
        return self.client.run(admin.count_unfinished(queue, task, state))

    async def count_unfinished_async(
        self, queue: str | None = None, task: str | None = None, state: str | None = None
    ) -> int:
        return await self.client.run_async(admin.count_unfinished(queue, task, state))

    def cancel_many(
        self, queue: str | None = None, task: str | None = None, state: str | None = None
    ) -> int:
        """Cancel every unfinished job matching the filters; return how many. Running ones
        are asked to stop (as `cancel` does) and count too."""
        cancelled, running = self.client.run(admin.cancel_many(queue, task, state))
        return cancelled + running

    async def cancel_many_async(
        self, queue: str | None = None, task: str | None = None, state: str | None = None
    ) -> int:
        cancelled, running = await self.client.run_async(admin.cancel_many(queue, task, state))
        return cancelled + running

    def pause(self, queue: str) -> None:
        """Stop workers from claiming jobs of this queue (from their next claim on)."""
        self.client.run(admin.pause(queue, True))

    async def pause_async(self, queue: str) -> None:
        await self.client.run_async(admin.pause(queue, True))

    def resume(self, queue: str) -> None:
        self.client.run(admin.pause(queue, False))

    async def resume_async(self, queue: str) -> None:
        await self.client.run_async(admin.pause(queue, False))

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
        return self.client.run(admin.prune(older_than, batch, progress))

    async def prune_async(
        self,
        older_than: float | None = None,
        *,
        batch: int = 1000,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        return await self.client.run_async(admin.prune(older_than, batch, progress))

    def count_prunable(self, older_than: float | None = None) -> int:
        """How many finished jobs `prune(older_than)` would delete now."""
        return self.client.run(admin.prune_count(older_than))

    async def count_prunable_async(self, older_than: float | None = None) -> int:
        return await self.client.run_async(admin.prune_count(older_than))

    def redact(self, args: Any) -> Any:
        """`args` as logs and the CLI may show them: sensitive keys masked."""
        return redact(args, self.redact_keys)

    # --- workers ------------------------------------------------------------------------

    def worker(self, **settings: Any) -> Worker:
        return Worker(self, **settings)

    def run_worker(
        self,
        queues: Sequence[str] | None = None,
        concurrency: int = 16,
        burst: bool = False,
        **settings: Any,
    ) -> None:
        """Run a worker in this thread until it is stopped (or, with burst, runs dry)."""
        asyncio.run(self.run_worker_async(queues, concurrency, burst, **settings))

    async def run_worker_async(
        self,
        queues: Sequence[str] | None = None,
        concurrency: int = 16,
        burst: bool = False,
        **settings: Any,
    ) -> None:
        worker = self.worker(queues=queues, concurrency=concurrency, burst=burst, **settings)
        await worker.run()
