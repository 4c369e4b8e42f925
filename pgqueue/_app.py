"""The public client: an App holds the task registry and where jobs live, and its methods
are thin sync and async shells over the plans in `pgqueue._core` (run by its Client)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar, overload

from ._client import Client
from ._core import admin, catalog, flow, schedules, topics, workflow
from ._core.plan import Plan
from ._core.retry import DEFAULT_RETRY, RetryPolicy
from ._core.schedules import Schedule
from ._core.validate import check_schema, encode_args
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
from .types import JobInfo, QueueLimit, QueueSettings, QueueStats

P = ParamSpec("P")
R = TypeVar("R")


class _Unset:
    """The default of a `configure_queue` setting: not passed, so left as it is."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


def _changes(**settings: Any) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if v is not UNSET}


def _mapping(args: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if args is None:
        return {}
    if not isinstance(args, Mapping):
        raise ValidationError(f"task arguments must be a mapping of names to values, not {args!r}")
    return args


def _task_name(task: Any) -> str:
    if isinstance(task, Task):
        return task.name
    if isinstance(task, str):
        return task
    raise ValidationError(f"expected a Task or a task name, not {task!r}")


def _subscription(
    pattern: str,
    task: Any,
    queue: str | None,
    priority: int | None,
    max_attempts: int | None,
) -> topics.Subscription:
    return topics.Subscription.build(pattern, _task_name(task), queue, priority, max_attempts)


def _target(conn: Any, session: Any) -> Any:
    if conn is not None and session is not None:
        raise ValidationError("pass conn or session, not both")
    return conn if conn is not None else session


class App:
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

    # --- topics -------------------------------------------------------------------------

    def subscribe(
        self,
        pattern: str,
        task: Task[Any, Any] | str,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
    ) -> None:
        """Every later publish on a topic matching `pattern` makes a job of `task` (a Task or
        a task name: the subscriber need not be imported here). Durable (a row) and
        idempotent; subscribing again updates the options. `queue`, `priority` and
        `max_attempts` default to the task's. `*` matches one segment, `#` any number."""
        self.client.run(
            topics.subscribe([_subscription(pattern, task, queue, priority, max_attempts)])
        )

    async def subscribe_async(
        self,
        pattern: str,
        task: Task[Any, Any] | str,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
    ) -> None:
        await self.client.run_async(
            topics.subscribe([_subscription(pattern, task, queue, priority, max_attempts)])
        )

    def unsubscribe(self, pattern: str, task: Task[Any, Any] | str) -> bool:
        """Remove a subscription (jobs already published stay); False if there was none."""
        return self.client.run(topics.unsubscribe(pattern, _task_name(task)))

    async def unsubscribe_async(self, pattern: str, task: Task[Any, Any] | str) -> bool:
        return await self.client.run_async(topics.unsubscribe(pattern, _task_name(task)))

    def publish(
        self,
        topic: str,
        args: Mapping[str, Any] | None = None,
        conn: Any = None,
        session: Any = None,
    ) -> list[Job]:
        """One job per subscription matching `topic`, all in one transaction (the caller's,
        with `conn` / `session`): all of them or none. Returns the jobs, an empty list when
        nothing subscribes. Each subscriber's queue wakes once, at commit."""
        # One statement: atomic by itself, so no BEGIN/COMMIT round trips on a pool.
        plan = topics.publish(topic, [encode_args(_mapping(args))])
        ids = self.client.run(plan, _target(conn, session))
        return [Job(i, False, self) for i in ids]

    async def publish_async(
        self,
        topic: str,
        args: Mapping[str, Any] | None = None,
        conn: Any = None,
        session: Any = None,
    ) -> list[Job]:
        plan = topics.publish(topic, [encode_args(_mapping(args))])
        ids = await self.client.run_async(plan, _target(conn, session))
        return [Job(i, False, self) for i in ids]

    def publish_many(
        self,
        topic: str,
        items: Iterable[Mapping[str, Any]],
        conn: Any = None,
        session: Any = None,
    ) -> list[Job]:
        """Publish several messages to one topic: one statement per chunk of 1,000, all or
        nothing."""
        encoded = [encode_args(_mapping(a)) for a in items]
        plan = topics.publish(topic, encoded)
        atomic = len(encoded) > topics.PUBLISH_CHUNK  # several statements: one transaction
        ids = self.client.run(plan, _target(conn, session), atomic=atomic)
        return [Job(i, False, self) for i in ids]

    async def publish_many_async(
        self,
        topic: str,
        items: Iterable[Mapping[str, Any]],
        conn: Any = None,
        session: Any = None,
    ) -> list[Job]:
        encoded = [encode_args(_mapping(a)) for a in items]
        plan = topics.publish(topic, encoded)
        atomic = len(encoded) > topics.PUBLISH_CHUNK
        ids = await self.client.run_async(plan, _target(conn, session), atomic=atomic)
        return [Job(i, False, self) for i in ids]

    def subscriptions(self) -> list[dict[str, Any]]:
        """Rows of the `subscriptions` view (`pgqueue topics`)."""
        return self.client.run(topics.list_subscriptions())

    async def subscriptions_async(self) -> list[dict[str, Any]]:
        return await self.client.run_async(topics.list_subscriptions())

    # --- schedules ----------------------------------------------------------------------

    def periodic(
        self,
        task: Task[Any, Any] | str,
        cron: str,
        name: str | None = None,
        args: Mapping[str, Any] | None = None,
        tz: str = "UTC",
        queue: str | None = None,
        priority: int | None = None,
        catch_up: str = "latest",
    ) -> Schedule:
        """Declare a schedule: a job of `task` for every slot of `cron` in time zone `tz`.

        Written when a worker starts, and fired by the elected worker while at least one
        live worker declares it (so removing it from the code stops it). Each slot makes
        exactly one job. `name` defaults to the task's name. After a downtime `catch_up`
        decides: "latest" runs the most recent missed slot once, "all" every missed slot
        (the 100 most recent), "none" waits for the next slot. Nothing is written here, so
        bad input fails at once with ValidationError.
        """
        task_name = _task_name(task)
        if isinstance(task, Task):
            task.check_arguments((), _mapping(args))
        schedule = Schedule.build(
            name=task_name if name is None else name,
            task=task_name,
            cron=cron,
            tz=tz,
            args=_mapping(args),
            queue=queue,
            priority=priority,
            catch_up=catch_up,
        )
        schedules.check_unique(self.declared_schedules.values(), schedule)
        self.declared_schedules[schedule.name] = schedule
        return schedule

    def pause_schedule(self, name: str) -> None:
        """Stop a schedule from firing (every worker, until resumed)."""
        self.client.run(schedules.pause(name, True))

    async def pause_schedule_async(self, name: str) -> None:
        await self.client.run_async(schedules.pause(name, True))

    def resume_schedule(self, name: str) -> None:
        """Fire a paused schedule again, from its next slot (the ones missed are skipped)."""
        self.client.run(schedules.pause(name, False))

    async def resume_schedule_async(self, name: str) -> None:
        await self.client.run_async(schedules.pause(name, False))

    def schedules(self) -> list[dict[str, Any]]:
        """Rows of the `schedules` view (`pgqueue schedules`)."""
        return self.client.run(schedules.list_schedules())

    async def schedules_async(self) -> list[dict[str, Any]]:
        return await self.client.run_async(schedules.list_schedules())

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
        jobs that an outage failed; otherwise each gets one more attempt."""
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

    def list_jobs(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        task: str | None = None,
        older_than: float | None = None,
        newer_than: float | None = None,
        limit: int = 50,
        before: int | None = None,
        after: int | None = None,
        group_key: str | None = None,
        topic: str | None = None,
        schedule: str | None = None,
    ) -> list[dict[str, Any]]:
        """Jobs as the `job_status` view shows them, newest first; every filter is optional.

        Keyset pagination: `before=<smallest id shown>` is the next (older) page,
        `after=<largest id shown>` the previous (newer) one; either costs what the first page
        does however deep it is."""
        return self.client.run(
            admin.list_jobs(
                state=state,
                queue=queue,
                task=task,
                older_than=older_than,
                newer_than=newer_than,
                limit=limit,
                before=before,
                after=after,
                group_key=group_key,
                topic=topic,
                schedule=schedule,
            )
        )

    async def list_jobs_async(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        task: str | None = None,
        older_than: float | None = None,
        newer_than: float | None = None,
        limit: int = 50,
        before: int | None = None,
        after: int | None = None,
        group_key: str | None = None,
        topic: str | None = None,
        schedule: str | None = None,
    ) -> list[dict[str, Any]]:
        return await self.client.run_async(
            admin.list_jobs(
                state=state,
                queue=queue,
                task=task,
                older_than=older_than,
                newer_than=newer_than,
                limit=limit,
                before=before,
                after=after,
                group_key=group_key,
                topic=topic,
                schedule=schedule,
            )
        )

    def job_graph(self, job_id: int) -> dict[str, Any]:
        """A job's workflow: the jobs it runs after (`after`), spawned (`spawned`), is needed
        by (`needed_by`) or was spawned by (`spawned_by`), each with its state; its finished
        `steps`; and the ids it is still `waiting_on`."""
        return self.client.run(workflow.graph(job_id))

    async def job_graph_async(self, job_id: int) -> dict[str, Any]:
        return await self.client.run_async(workflow.graph(job_id))

    def stuck_jobs(self, limit: int = 50) -> list[dict[str, Any]]:
        """Rows of the `stuck_jobs` view: long-running, rescued or often-retried jobs."""
        return self.client.run(admin.listing("stuck_list", limit))

    async def stuck_jobs_async(self, limit: int = 50) -> list[dict[str, Any]]:
        return await self.client.run_async(admin.listing("stuck_list", limit))

    def count_stuck(self) -> int:
        """How many rows the `stuck_jobs` view has (a listing stops at its limit)."""
        return self.client.run(admin.stuck_count())

    async def count_stuck_async(self) -> int:
        return await self.client.run_async(admin.stuck_count())

    def workers(self) -> list[dict[str, Any]]:
        """Live worker processes, with heartbeat age, running jobs and leadership."""
        return self.client.run(admin.listing("worker_list"))

    async def workers_async(self) -> list[dict[str, Any]]:
        return await self.client.run_async(admin.listing("worker_list"))

    def running_jobs(self, limit: int = 200) -> list[dict[str, Any]]:
        """Running jobs, longest-running first, each with its `worker_id` (see `workers`)."""
        return self.client.run(admin.running_jobs(limit))

    async def running_jobs_async(self, limit: int = 200) -> list[dict[str, Any]]:
        return await self.client.run_async(admin.running_jobs(limit))

    def throughput(self, bucket: float = 10.0, buckets: int = 30) -> list[tuple[int, int]]:
        """(completed, failed) per bucket of `bucket` seconds, oldest first."""
        return self.client.run(admin.throughput(bucket, buckets))

    async def throughput_async(
        self, bucket: float = 10.0, buckets: int = 30
    ) -> list[tuple[int, int]]:
        return await self.client.run_async(admin.throughput(bucket, buckets))

    def recent_failures(self, limit: int = 10) -> list[dict[str, Any]]:
        return self.client.run(admin.listing("recent_failures", limit))

    async def recent_failures_async(self, limit: int = 10) -> list[dict[str, Any]]:
        return await self.client.run_async(admin.listing("recent_failures", limit))

    def unfinished(self, job_ids: Sequence[int]) -> int:
        """How many of these jobs are still to run (scheduled, available, running, retrying)."""
        return self.client.run(admin.unfinished(job_ids))

    async def unfinished_async(self, job_ids: Sequence[int]) -> int:
        return await self.client.run_async(admin.unfinished(job_ids))

    def queue_stats(self) -> list[QueueStats]:
        return self.client.run(admin.queue_stats())

    async def queue_stats_async(self) -> list[QueueStats]:
        return await self.client.run_async(admin.queue_stats())

    # --- flow control (DESIGN.md section 8) ------------------------------------------------

    def configure_queue(
        self,
        name: str,
        *,
        concurrency: int | None = UNSET,
        rate: str | None = UNSET,
        group_concurrency: int | None = UNSET,
        group_rate: str | None = UNSET,
        fair: bool | None = UNSET,
        max_depth: int | None = UNSET,
    ) -> QueueSettings:
        """Set a queue's flow-control settings in the database, for every worker process.

        A setting not passed stays as it is; `None` removes it. `concurrency`: at most this
        many of the queue's jobs running at once across all workers; `rate`: at most N job
        starts in any window of the period (`"20/s"`, `"100/m"`, `"5/h"`, `"1000/d"`,
        `"30/10s"`); `group_concurrency` and `group_rate`: the same per `group_key`; `fair`:
        round-robin across group keys within a priority; `max_depth`: enqueue raises
        QueueFull past this many waiting jobs. Workers apply a change within a second,
        without a restart. Returns the queue's settings after the change; bad input raises
        ValidationError and changes nothing.
        """
        changes = _changes(
            concurrency=concurrency,
            rate=rate,
            group_concurrency=group_concurrency,
            group_rate=group_rate,
            fair=fair,
            max_depth=max_depth,
        )
        return self.client.run(flow.configure(name, changes))

    async def configure_queue_async(
        self,
        name: str,
        *,
        concurrency: int | None = UNSET,
        rate: str | None = UNSET,
        group_concurrency: int | None = UNSET,
        group_rate: str | None = UNSET,
        fair: bool | None = UNSET,
        max_depth: int | None = UNSET,
    ) -> QueueSettings:
        changes = _changes(
            concurrency=concurrency,
            rate=rate,
            group_concurrency=group_concurrency,
            group_rate=group_rate,
            fair=fair,
            max_depth=max_depth,
        )
        return await self.client.run_async(flow.configure(name, changes))

    def queue_settings(self, name: str) -> QueueSettings:
        """A queue's flow-control settings (all unset for a queue without any)."""
        return self.client.run(flow.settings(name))

    async def queue_settings_async(self, name: str) -> QueueSettings:
        return await self.client.run_async(flow.settings(name))

    def queue_limits(self, queue: str | None = None) -> list[QueueLimit]:
        """Rows of the `pgqueue.queue_limits` view: every limit with its use now (slots
        held, starts in the current window, tokens left, waiting jobs), per queue and per
        busy group."""
        return self.client.run(flow.limits(queue))

    async def queue_limits_async(self, queue: str | None = None) -> list[QueueLimit]:
        return await self.client.run_async(flow.limits(queue))

    def rejected_enqueues(self) -> int:
        """How many enqueues every client had refused with QueueFull (a database counter)."""
        return self.client.run(flow.rejected())

    async def rejected_enqueues_async(self) -> int:
        return await self.client.run_async(flow.rejected())

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
