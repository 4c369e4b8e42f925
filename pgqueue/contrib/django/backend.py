"""`PgQueueBackend`: Django's task backend interface over pgqueue's enqueue and read plans,
run on Django's own database connection."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS

from ..._core import admin
from ..._core.enqueue import enqueue_one
from ..._core.plan import Plan
from ..._core.spec import JobSpec
from ..._core.validate import NAME_PATTERN, check_schema, encode_json
from ..._db.django import DjangoRunner
from ...errors import ConfigurationError, JobNotFound, SchemaNotMigrated, ValidationError
from ...types import JobInfo
from ._compat import (
    BaseTaskBackend,
    InvalidTask,
    TaskResultDoesNotExist,
    normalize_json,
    task_enqueued,
)
from ._results import as_task_result, resolve

#: The OPTIONS this backend reads, and their defaults.
DEFAULT_OPTIONS: Mapping[str, Any] = {
    # The DATABASES alias whose connection (and so whose transactions) jobs are written on.
    "DATABASE": DEFAULT_DB_ALIAS,
    # The pgqueue schema in that database.
    "SCHEMA": "pgqueue",
    # Attempts per job: Django's semantics are one run, a raising task is FAILED. More makes
    # pgqueue retry with its backoff; the result stays READY between attempts.
    "MAX_ATTEMPTS": 1,
}


def _enqueue_and_read(spec: JobSpec) -> Plan[JobInfo]:
    """Insert the job, then read it back in the same transaction: the TaskResult carries the
    database's own enqueue time and state, exactly as a later `get_result` will."""
    job_id, _duplicate = yield from enqueue_one(spec)
    return (yield from admin.get_job(job_id))


class PgQueueBackend(BaseTaskBackend):  # type: ignore[misc]
    """A `django.tasks` backend storing jobs in pgqueue, on Django's connection.

    Jobs are written on `connections[OPTIONS["DATABASE"]]`, inside whatever transaction is
    open there: a task enqueued in `transaction.atomic()` (or a savepoint in it) exists iff
    that commits, and a worker (`manage.py pgqueue_worker`) cannot see it before. Building the
    backend touches no database, since Django builds it when a module defining tasks is
    imported.
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        options = {**DEFAULT_OPTIONS, **self.options}
        unknown = sorted(set(options) - set(DEFAULT_OPTIONS))
        if unknown:
            raise ImproperlyConfigured(
                f"TASKS[{alias!r}]['OPTIONS'] has unknown keys {unknown}; pgqueue reads"
                f" {sorted(DEFAULT_OPTIONS)}"
            )
        self.database: str = options["DATABASE"]
        try:
            self.schema: str = check_schema(options["SCHEMA"])
        except ConfigurationError as exc:
            raise ImproperlyConfigured(f"TASKS[{alias!r}]['OPTIONS']['SCHEMA']: {exc}") from None
        attempts = options["MAX_ATTEMPTS"]
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ImproperlyConfigured(
                f"TASKS[{alias!r}]['OPTIONS']['MAX_ATTEMPTS'] must be an integer >= 1,"
                f" not {attempts!r}"
            )
        self.max_attempts: int = attempts
        for queue in self.queues:
            if not NAME_PATTERN.fullmatch(str(queue)):
                raise ImproperlyConfigured(
                    f"TASKS[{alias!r}]['QUEUES'] has {queue!r}, which is not a pgqueue queue"
                    " name (1-128 letters, digits, '_', '.', ':' or '-')"
                )
        self._runner: DjangoRunner | None = None

    @property
    def runner(self) -> DjangoRunner:
        """Made on first use; it checks the schema once, on the first statement."""
        if self._runner is None:
            self._runner = DjangoRunner(self.database, self.schema)
        return self._runner

    def _run(self, plan: Plan[Any]) -> Any:
        try:
            return self.runner.run(plan)
        except SchemaNotMigrated as exc:
            raise SchemaNotMigrated(
                f"{exc} (with Django: `manage.py migrate` on database {self.database!r})"
            ) from None

    # --- the contract -------------------------------------------------------------------

    def validate_task(self, task: Any) -> None:
        """Django's rules, and pgqueue's names: a row stores the task's `module_path` and
        its queue, which must fit pgqueue's name pattern."""
        super().validate_task(task)
        if not NAME_PATTERN.fullmatch(task.module_path):
            raise InvalidTask(
                f"Task path {task.module_path!r} is not a valid pgqueue task name"
                " (1-128 letters, digits, '_', '.', ':' or '-')."
            )
        if not NAME_PATTERN.fullmatch(task.queue_name):
            raise InvalidTask(f"Queue name {task.queue_name!r} is not a valid pgqueue queue name.")

    def enqueue(self, task: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        """Write the job on Django's connection and return its TaskResult (READY)."""
        self.validate_task(task)
        payload = {"args": normalize_json(args), "kwargs": normalize_json(kwargs)}
        try:
            encoded = encode_json(payload, "task arguments")
        except ValidationError as exc:
            # Django reports arguments it cannot store as TypeError (NaN, a NUL, too large).
            raise TypeError(str(exc)) from None
        spec = JobSpec(
            task=task.module_path,
            args=encoded,
            queue=task.queue_name,
            priority=task.priority,
            run_at=task.run_after,
            max_attempts=self.max_attempts,
        )
        info = self._run(_enqueue_and_read(spec))
        result = as_task_result(info, task, self.alias)
        task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> Any:
        """The job as a TaskResult. An unknown id, one that is no job id at all, or a job that
        is not a Django task of an installed app raises TaskResultDoesNotExist, and is found
        out without an error inside the caller's transaction, which stays usable."""
        if not (isinstance(result_id, str) and result_id.isascii() and result_id.isdigit()):
            raise TaskResultDoesNotExist(result_id)
        try:
            info = self._run(admin.get_job(int(result_id)))
        except (JobNotFound, ValidationError):
            raise TaskResultDoesNotExist(result_id) from None
        task = resolve(info.task)
        if task is None:
            raise TaskResultDoesNotExist(result_id)
        return as_task_result(info, task, self.alias)

    def check(self, **kwargs: Any) -> list[Any]:
        """System checks: the app installed (its migration creates the schema), the database
        alias configured, and PostgreSQL behind it."""
        from django.apps import apps

        errors: list[Any] = []
        if not apps.is_installed("pgqueue.contrib.django"):
            errors.append(
                checks.Error(
                    "pgqueue.contrib.django is not in INSTALLED_APPS",
                    hint="Add it, so that `manage.py migrate` creates the pgqueue schema and"
                    " `manage.py pgqueue_worker` exists.",
                    id="pgqueue.E001",
                )
            )
        database = settings.DATABASES.get(self.database)
        if database is None:
            errors.append(
                checks.Error(
                    f"TASKS[{self.alias!r}] names database {self.database!r}, which is not in"
                    " DATABASES",
                    id="pgqueue.E002",
                )
            )
        elif "postgresql" not in str(database.get("ENGINE", "")):
            errors.append(
                checks.Error(
                    f"TASKS[{self.alias!r}] needs PostgreSQL; database {self.database!r} uses"
                    f" {database.get('ENGINE')}",
                    id="pgqueue.E003",
                )
            )
        return errors
