"""pgqueue's worker on Django tasks: each Django task becomes a pgqueue Task whose function
runs it the way Django's own backends do (context, signals, errors), so the worker itself is
pgqueue's, unchanged: batched claims, LISTEN wake-ups, heartbeats, rescue, retries."""

from __future__ import annotations

import os
import socket
import threading
import traceback
from collections.abc import Iterator, Mapping
from inspect import iscoroutinefunction
from typing import Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections
from django.utils import timezone

from ..._client import Client
from ..._context import current_job
from ..._core.validate import encode_result
from ..._db.django import dsn_for, fresh_connections
from ..._db.pools import Database
from ..._db.queries import Queries
from ..._logging import redact_keys_from_env
from ..._task import Task as PgTask
from ...errors import Fail
from ._compat import TaskContext, TaskError, TaskResultStatus, normalize_json
from ._compat import task_finished as finished_signal
from ._compat import task_started as started_signal
from ._results import discover, replaced, resolve


def _error(exc: BaseException) -> Any:
    cls = type(exc)
    return TaskError(
        exception_class_path=f"{cls.__module__}.{cls.__qualname__}",
        traceback="".join(traceback.format_exception(cls, exc, exc.__traceback__)),
    )


class _Run:
    """One attempt of one Django task, shared by the sync and the async runner."""

    def __init__(self, backend: Any, task: Any) -> None:
        self.backend = backend
        self.task = task
        self.sender = type(backend)

    def started(self) -> Any:
        """The attempt's TaskResult as the database has it now: RUNNING, this attempt
        counted in `worker_ids`, so `context.attempt` is 1 on the first run.

        A job that started from the worker's prefetch buffer reads `claimed` until its start
        is recorded (with its outcome, or after half a second): the run itself knows it has
        started, so it says so."""
        job = current_job()
        result = self.backend.get_result(str(job.id))
        if result.status == TaskResultStatus.RUNNING:
            return result
        now = timezone.now()
        workers = list(result.worker_ids)[: job.attempt - 1]
        workers += [f"{socket.gethostname()}:{os.getpid()}"] * (job.attempt - len(workers))
        return replaced(
            result,
            status=TaskResultStatus.RUNNING,
            started_at=now,
            last_attempted_at=now,
            worker_ids=workers,
        )

    def started_fresh(self) -> Any:
        """`started`, for an async task: run on asgiref's thread, whose Django connection
        may have broken or outlived `CONN_MAX_AGE` since the last job."""
        close_old_connections()
        return self.started()

    def call_args(self, result: Any, args: list[Any]) -> list[Any]:
        return [TaskContext(task_result=result), *args] if self.task.takes_context else args

    @staticmethod
    def value(raw: Any) -> Any:
        """Stored as Django stores it (tuples as lists, bytes as text); what JSON cannot hold
        fails the attempt here, as in Django's own backends, rather than in the completer."""
        value = normalize_json(raw)
        encode_result(value)
        return value

    @staticmethod
    def final(exc: BaseException) -> bool:
        """Whether this failure ends the job (no attempt left, or `pgqueue.Fail`): only then
        is the task finished, in Django's sense; a retried attempt leaves it READY."""
        job = current_job()
        return isinstance(exc, Fail) or job.attempt >= job.max_attempts

    def succeeded(self, result: Any, value: Any) -> Any:
        return replaced(
            result,
            status=TaskResultStatus.SUCCESSFUL,
            finished_at=timezone.now(),
            return_value=value,
        )

    def failed(self, result: Any, exc: BaseException) -> Any:
        return replaced(
            result,
            status=TaskResultStatus.FAILED,
            finished_at=timezone.now(),
            errors=[*result.errors, _error(exc)],
        )


def _sync_runner(run: _Run) -> Any:
    func = run.task.func

    def run_sync(args: list[Any] | None = None, kwargs: dict[str, Any] | None = None) -> Any:
        with fresh_connections():
            result = run.started()
            started_signal.send(run.sender, task_result=result)
            try:
                value = run.value(func(*run.call_args(result, list(args or [])), **(kwargs or {})))
            except (Exception, SystemExit) as exc:
                # Sent inside the handler, as Django's backends do: its logging receiver
                # reads sys.exc_info(). Then pgqueue records the failure.
                if run.final(exc):
                    finished_signal.send(run.sender, task_result=run.failed(result, exc))
                raise
            finished_signal.send(run.sender, task_result=run.succeeded(result, value))
        return value

    return run_sync


def _async_runner(run: _Run) -> Any:
    func = run.task.func

    async def run_async(args: list[Any] | None = None, kwargs: dict[str, Any] | None = None) -> Any:
        result = await sync_to_async(run.started_fresh)()
        await started_signal.asend(run.sender, task_result=result)
        try:
            value = run.value(
                await func(*run.call_args(result, list(args or [])), **(kwargs or {}))
            )
        except (Exception, SystemExit) as exc:
            if run.final(exc):
                await finished_signal.asend(run.sender, task_result=run.failed(result, exc))
            raise
        await finished_signal.asend(run.sender, task_result=run.succeeded(result, value))
        return value

    return run_async


class DjangoTasks(Mapping[str, PgTask[Any, Any]]):
    """The worker's task registry: pgqueue Tasks made from Django tasks, found at start in
    the installed apps (those declared for this backend) and, for a row naming one not seen
    yet, resolved then (only inside an installed app's modules: `resolve`). A name that does
    not resolve is missing, so the worker fails that job as an unknown task."""

    def __init__(self, host: DjangoWorkerHost, backend: Any) -> None:
        self.host = host
        self.backend = backend
        self._tasks: dict[str, PgTask[Any, Any]] = {}
        self._missing: set[str] = set()
        self._lock = threading.Lock()
        # At start, the tasks declared for this backend: they go to the catalog with its
        # MAX_ATTEMPTS (another backend's tasks carry that backend's). A job of a task
        # declared elsewhere but enqueued here (`.using(backend=...)`) resolves when it comes.
        for task in discover():
            if task.backend == backend.alias:
                self._add(task)

    def _add(self, task: Any) -> PgTask[Any, Any]:
        run = _Run(self.backend, task)
        fn = _async_runner(run) if iscoroutinefunction(task.func) else _sync_runner(run)
        wrapped: PgTask[Any, Any] = PgTask(
            self.host,
            fn,
            name=task.module_path,
            queue=task.queue_name,
            priority=task.priority,
            max_attempts=self.backend.max_attempts,
        )
        self._tasks[task.module_path] = wrapped
        return wrapped

    def __getitem__(self, name: str) -> PgTask[Any, Any]:
        found = self._tasks.get(name)
        if found is not None:
            return found
        with self._lock:
            if name in self._tasks:
                return self._tasks[name]
            if name not in self._missing:
                task = resolve(name)
                if task is not None:
                    return self._add(task)
                self._missing.add(name)
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._tasks))

    def __len__(self) -> int:
        return len(self._tasks)


class DjangoWorkerHost:
    """What pgqueue's Worker needs (its `WorkerHost`), for one Django task backend: the
    database behind the backend's alias (the worker opens its own pools to it), the
    backend's schema, and its tasks."""

    def __init__(self, backend: Any) -> None:
        self.database = Database(dsn_for(backend.database))
        self.queries = Queries(backend.schema)
        self.client = Client(self.database, self.queries)
        self.redact_keys = redact_keys_from_env()
        self.tasks = DjangoTasks(self, backend)
        #: Django's tasks framework has no schedules: a Django worker declares none.
        self.declared_schedules: Mapping[str, Any] = {}

    def close(self) -> None:
        self.client.close()
        self.database.close()
