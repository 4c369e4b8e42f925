"""Tasks and their enqueue calls: turning (task, keyword arguments, options) into a JobSpec
and handing it to the Client. Nothing here talks to the database itself."""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Generic, ParamSpec, Protocol, TypeVar

from ._client import Client
from ._core import admin, workflow
from ._core.catalog import TaskDefaults
from ._core.enqueue import enqueue_batches, enqueue_many, enqueue_one
from ._core.plan import Plan
from ._core.retry import DEFAULT_RETRY, RetryPolicy
from ._core.spec import JobSpec, batched
from ._core.topics import check_pattern
from ._core.validate import (
    check_group_key,
    check_int,
    check_name,
    check_seconds,
    encode_args,
)
from ._tracing import current_context
from .errors import UnknownTask, ValidationError
from .types import JobInfo

P = ParamSpec("P")
R = TypeVar("R")

#: Argument-name sets remembered per task as known to fit its function.
MAX_REMEMBERED_SHAPES = 256


class Host(Protocol):
    """What tasks and jobs need of their App (a protocol: this module never imports it)."""

    client: Client

    @property
    def tasks(self) -> Mapping[str, Task[Any, Any]]: ...


@dataclass(frozen=True)
class EnqueueOptions:
    """Per-call overrides of a task's defaults; None means "use the task's default"."""

    queue: str | None = None
    priority: int | None = None
    delay: float | None = None
    run_at: datetime | None = None
    unique_key: str | None = None
    max_attempts: int | None = None
    #: Jobs (or job ids) this one waits for: `waiting` until every one has completed.
    after: Any = None
    #: The tenant / customer / API key this job belongs to (group limits, fairness).
    group_key: str | None = None
    #: Not started within this many seconds of its enqueue: cancelled as expired.
    expires_in: float | None = None
    #: Not started by then: cancelled as expired.
    expires_at: datetime | None = None
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
        if self.group_key is not None:
            check_group_key(self.group_key)
        if self.expires_in is not None:
            if check_seconds("expires_in", self.expires_in) <= 0:
                raise ValidationError("expires_in must be a positive number of seconds")
            if self.expires_at is not None:
                raise ValidationError("pass expires_in or expires_at, not both")
        if self.expires_at is not None and (
            not isinstance(self.expires_at, datetime) or self.expires_at.tzinfo is None
        ):
            raise ValidationError(
                f"expires_at must be a timezone-aware datetime, not {self.expires_at!r}"
            )
        if self.conn is not None and self.session is not None:
            raise ValidationError("pass conn or session, not both")
        if self.after is not None and not isinstance(self.after, tuple):
            return replace(self, after=workflow.parent_ids(self.after) or None)
        return self

    @property
    def target(self) -> Any:
        """Where the enqueue runs: the caller's connection or session, or None (a pool)."""
        return self.conn if self.conn is not None else self.session


@dataclass
class Job:
    """A handle on an enqueued job."""

    id: int
    duplicate: bool
    app: Host

    def info(self) -> JobInfo:
        return self.app.client.run(admin.get_job(self.id))

    async def info_async(self) -> JobInfo:
        return await self.app.client.run_async(admin.get_job(self.id))

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the job finishes; return its result or raise JobFailed / TimeoutError.

        Wakes on the NOTIFY that workers send when they record outcomes, re-checking the row
        at most every few seconds in case a notification is lost, so it never busy-polls."""
        return self.app.client.wait(self.id, timeout)

    async def wait_async(self, timeout: float | None = None) -> Any:
        return await self.app.client.wait_async(self.id, timeout)


class Task(Generic[P, R]):
    """A registered function that can be enqueued by name and run by a worker."""

    def __init__(
        self,
        app: Host,
        fn: Callable[P, R],
        *,
        name: str,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        fail_on: tuple[type[BaseException], ...] = (),
        topics: Sequence[str] = (),
    ) -> None:
        self.app = app
        self.fn = fn
        self.name = check_name("task", name)
        #: What the task's jobs get unless a call says otherwise; None: the database's
        #: default (queue `default`, priority 0, 3 attempts), decided in one place, in SQL.
        self.defaults = EnqueueOptions(
            queue=queue, priority=priority, max_attempts=max_attempts
        ).validated()
        self.timeout = None if timeout is None else check_seconds("timeout", timeout) or None
        self.retry = retry
        if isinstance(fail_on, type):
            fail_on = (fail_on,)
        if not all(isinstance(e, type) and issubclass(e, BaseException) for e in fail_on):
            raise ValidationError(f"fail_on takes exception classes, not {fail_on!r}")
        #: Exceptions that fail a job at once, never retried (a declined card, a deleted row).
        self.fail_on = tuple(fail_on)
        if isinstance(topics, str):
            topics = (topics,)
        #: Topic patterns this task subscribes to, written when a worker that has it starts.
        self.topics = tuple(check_pattern(t) for t in topics)
        self.is_async = inspect.iscoroutinefunction(fn)
        self.signature = inspect.signature(fn)
        self._accepted_names: set[frozenset[str]] = set()

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.defaults.queue or 'default'}>"

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
        self._bind_names(kwargs, worker=False)

    def check_argument_names(self, kwargs: Mapping[str, Any]) -> None:
        """Raise TypeError unless a row's arguments fit the function (worker side)."""
        self._bind_names(kwargs, worker=True)

    def _bind_names(self, kwargs: Mapping[str, Any], *, worker: bool) -> None:
        # Whether keyword arguments bind depends only on their names, so each accepted set of
        # names is remembered (up to a bound, for functions taking **kwargs) and the
        # signature is consulted once per shape, not once per job (nor is an error message
        # built before there is an error: it ran for every job).
        names = frozenset(kwargs)
        if names in self._accepted_names:
            return
        try:
            self.signature.bind(**kwargs)
        except TypeError as exc:
            prefix = (
                f"arguments {sorted(kwargs)} do not match task {self.name}: "
                if worker
                else f"task {self.name}: "
            )
            raise TypeError(f"{prefix}{exc}") from None
        if len(self._accepted_names) < MAX_REMEMBERED_SHAPES:
            self._accepted_names.add(names)

    def catalog_entry(self) -> TaskDefaults:
        """What the task catalog records of this task: the defaults it declares."""
        return TaskDefaults(
            self.name,
            self.defaults.queue,
            self.defaults.priority,
            self.defaults.max_attempts,
            self.timeout,
        )

    def spec(
        self, kwargs: Mapping[str, Any], opts: EnqueueOptions, trace: str | None = None
    ) -> JobSpec:
        """The row to insert for one call: per-call options over the task's defaults, and
        the enqueuer's trace context (`pgqueue._tracing.current_context()`), if any."""
        defaults = self.defaults
        return JobSpec(
            task=self.name,
            args=encode_args(kwargs),
            queue=opts.queue or defaults.queue,
            priority=opts.priority if opts.priority is not None else defaults.priority,
            run_at=opts.run_at,
            delay=opts.delay,
            unique_key=opts.unique_key,
            max_attempts=opts.max_attempts or defaults.max_attempts,
            timeout=self.timeout,
            trace=trace,
            group_key=opts.group_key,
            expires_at=opts.expires_at,
            expires_in=opts.expires_in,
        )

    def options(self, **options: Any) -> TaskCall[P, R]:
        return TaskCall(self, EnqueueOptions(**options).validated())

    def enqueue(self, *args: Any, **kwargs: Any) -> Job:
        return TaskCall(self, NO_OPTIONS).enqueue(*args, **kwargs)

    async def enqueue_async(self, *args: Any, **kwargs: Any) -> Job:
        return await TaskCall(self, NO_OPTIONS).enqueue_async(*args, **kwargs)

    def enqueue_many(self, items: Iterable[Mapping[str, Any]]) -> list[Job]:
        return TaskCall(self, NO_OPTIONS).enqueue_many(items)

    async def enqueue_many_async(self, items: Iterable[Mapping[str, Any]]) -> list[Job]:
        return await TaskCall(self, NO_OPTIONS).enqueue_many_async(items)


NO_OPTIONS = EnqueueOptions()


class TaskCall(Generic[P, R]):
    """A task with per-call options bound (`task.options(...)`)."""

    def __init__(self, task: Task[P, R], opts: EnqueueOptions) -> None:
        self.task = task
        self.opts = opts

    def options(self, **options: Any) -> TaskCall[P, R]:
        return TaskCall(self.task, replace(self.opts, **options).validated())

    def _one(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> JobSpec:
        self.task.check_arguments(args, kwargs)
        return self.task.spec(kwargs, self.opts, current_context())

    def _specs(self, items: Iterable[Mapping[str, Any]]) -> Iterator[JobSpec]:
        """Each item validated and encoded as it is taken (see `_plan_many`)."""
        if self.opts.unique_key is not None:
            raise ValidationError(
                "unique_key applies to one job; it cannot be used with enqueue_many"
            )
        return self._each_spec(items, current_context())  # one context for the whole call

    def _many(self, items: Iterable[Mapping[str, Any]]) -> list[JobSpec]:
        return list(self._specs(items))

    def _each_spec(
        self, items: Iterable[Mapping[str, Any]], trace: str | None
    ) -> Iterator[JobSpec]:
        for kwargs in items:
            if not isinstance(kwargs, Mapping):
                raise ValidationError(
                    f"enqueue_many takes mappings of keyword arguments, not {kwargs!r}"
                )
            self.task.check_arguments((), kwargs)
            yield self.task.spec(kwargs, self.opts, trace)

    def _plan_many(self, items: Iterable[Mapping[str, Any]]) -> Plan[list[int]] | None:
        """The plan of a bulk enqueue, None when there is nothing to enqueue.

        On pgqueue's own connection the call runs in a transaction of its own, so an error
        rolls back whatever was sent: only the first batch is validated and encoded before
        the plan starts (its errors come before any connection is touched), each later one
        while the server inserts the batch before it (`enqueue_batches`). In a caller's
        transaction every job is validated and encoded first, so a bad item leaves that
        transaction as it was."""
        specs = self._specs(items)
        if self.opts.target is None and not self.opts.after:
            batches = batched(specs)
            first = next(batches, None)
            return None if first is None else enqueue_batches(itertools.chain([first], batches))
        every = list(specs)
        if not every and not self.opts.after:  # with `after`, the parents are checked
            return None
        if self.opts.after:
            return workflow.enqueue_many_after(every, self.opts.after)
        return enqueue_many(every)

    def _job(self, ref: tuple[int, bool]) -> Job:
        return Job(id=ref[0], duplicate=ref[1], app=self.task.app)

    def enqueue(self, *args: Any, **kwargs: Any) -> Job:
        spec = self._one(args, kwargs)
        client = self.task.app.client
        if client.inline is not None:
            return client.inline(spec)  # type: ignore[no-any-return]
        if self.opts.after:
            plan = workflow.enqueue_after(spec, self.opts.after)
            return self._job(client.run(plan, self.opts.target, atomic=True))
        return self._job(client.run(enqueue_one(spec), self.opts.target))

    async def enqueue_async(self, *args: Any, **kwargs: Any) -> Job:
        spec = self._one(args, kwargs)
        client = self.task.app.client
        if client.inline is not None:
            return client.inline(spec)  # type: ignore[no-any-return]
        if self.opts.after:
            plan = workflow.enqueue_after(spec, self.opts.after)
            return self._job(await client.run_async(plan, self.opts.target, atomic=True))
        return self._job(await client.run_async(enqueue_one(spec), self.opts.target))

    def enqueue_many(self, items: Iterable[Mapping[str, Any]]) -> list[Job]:
        """One statement per batch of 2,000, pipelined; all or nothing (in the caller's
        transaction, or in one of its own). No items: no statement, no jobs."""
        client = self.task.app.client
        if client.inline is not None:
            return [client.inline(spec) for spec in self._many(items)]
        plan = self._plan_many(items)
        if plan is None:
            return []
        ids = client.run(plan, self.opts.target, atomic=True)
        return [self._job((i, False)) for i in ids]

    async def enqueue_many_async(self, items: Iterable[Mapping[str, Any]]) -> list[Job]:
        client = self.task.app.client
        if client.inline is not None:
            return [client.inline(spec) for spec in self._many(items)]
        plan = self._plan_many(items)
        if plan is None:
            return []
        ids = await client.run_async(plan, self.opts.target, atomic=True)
        return [self._job((i, False)) for i in ids]


def _accept_any(**kwargs: Any) -> None:
    raise UnknownTask("this task is not registered in this process; a worker runs it")


class UnregisteredTask(Task[Any, Any]):
    """Stands in for a task another process registers: any keyword arguments are accepted,
    and every default is the database's."""

    def __init__(self, app: Host, name: str) -> None:
        super().__init__(app, _accept_any, name=name)
