"""How a pgqueue job looks through `django.tasks`: which Django task a row names (only tasks
defined in installed apps' modules), and the row as a `TaskResult`.

A job stores its Django task's `module_path` as the task name and its arguments as
`{"args": [...], "kwargs": {...}}`, so `pgqueue status`, `top` and the views show Django jobs
by their task path, and a SQL client can enqueue one with `pgqueue.enqueue()`.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
from typing import Any

from django.apps import apps
from django.utils.module_loading import module_has_submodule

from ...errors import WorkerLost
from ...types import JobInfo, JobState
from ._compat import InvalidTask, Task, TaskError, TaskResult, TaskResultStatus

log = logging.getLogger("pgqueue.django")

#: pgqueue's states as Django's four: waiting to run (now, later, again after a failed
#: attempt, claimed into a worker's buffer but not started, or waiting for the jobs it
#: depends on) is READY; a cancelled job never finished successfully, so it is FAILED.
STATUS = {
    JobState.SCHEDULED: TaskResultStatus.READY,
    JobState.AVAILABLE: TaskResultStatus.READY,
    JobState.RETRYING: TaskResultStatus.READY,
    JobState.CLAIMED: TaskResultStatus.READY,
    JobState.WAITING: TaskResultStatus.READY,
    JobState.RUNNING: TaskResultStatus.RUNNING,
    JobState.COMPLETED: TaskResultStatus.SUCCESSFUL,
    JobState.FAILED: TaskResultStatus.FAILED,
    JobState.CANCELLED: TaskResultStatus.FAILED,
}


def _installed_packages() -> list[str]:
    return [config.name for config in apps.get_app_configs()]


def resolve(name: str) -> Any:
    """The Django task a row names, or None.

    Only a `Task` object defined at module level in a module of an installed app resolves:
    the module part must lie inside an installed app's package (so a row naming `os.system`
    or any other importable path is never imported), and the attribute must be a Task whose
    own `module_path` is the name. Importing such a module is what Django does with an app's
    code anyway; its errors are logged and the job fails as an unknown task.
    """
    module, _, attr = name.rpartition(".")
    if not module or not attr:
        return None
    if not any(module == p or module.startswith(p + ".") for p in _installed_packages()):
        return None
    try:
        found = importlib.import_module(module)
    except Exception:
        log.warning("cannot import %s for task %s", module, name, exc_info=True)
        return None
    candidate = getattr(found, attr, None)
    if isinstance(candidate, Task) and candidate.module_path == name:
        return candidate
    return None


def discover() -> list[Any]:
    """Every Django task defined in the installed apps' `tasks` modules and in any of their
    modules already imported: what a worker registers in pgqueue's catalog at start."""
    packages = _installed_packages()
    for config in apps.get_app_configs():
        if module_has_submodule(config.module, "tasks"):
            importlib.import_module(f"{config.name}.tasks")
    found: dict[str, Any] = {}
    for module_name, module in list(sys.modules.items()):
        if module is None or not any(
            module_name == p or module_name.startswith(p + ".") for p in packages
        ):
            continue
        for value in list(vars(module).values()):
            if isinstance(value, Task) and value.func.__module__ == module_name:
                found.setdefault(value.module_path, value)
    return list(found.values())


def task_error(record: dict[str, Any]) -> Any:
    """One entry of a job's `errors` as Django's TaskError. Entries written before the class
    path was recorded, and rescues (whose worker died), get the closest importable class."""
    path = record.get("path")
    if not path:
        path = (
            f"{WorkerLost.__module__}.{WorkerLost.__qualname__}"
            if record.get("kind") == "rescue"
            else f"builtins.{record.get('type') or 'Exception'}"
        )
    traceback = record.get("traceback") or f"{record.get('type')}: {record.get('message')}"
    return TaskError(exception_class_path=path, traceback=traceback)


def worker_ids(info: JobInfo) -> list[str]:
    """One worker per attempt started: a failed attempt's error names its worker; the
    attempt still running or the one that succeeded is the job's current worker."""
    by_attempt = {e.get("attempt"): e.get("worker") for e in info.errors}
    return [str(by_attempt.get(n) or info.worker or "") for n in range(1, info.attempt + 1)]


def as_task_result(info: JobInfo, task: Any, alias: str) -> Any:
    """A job row as the TaskResult Django's API returns (`enqueue`, `get_result`).

    `task` is the Django task the row names, rebound to the row's queue, priority and
    `run_after` (None unless the job was deferred) on this backend. pgqueue keeps one start
    time per job, so `started_at` and `last_attempted_at` are the latest attempt's start:
    the same thing with the default of one attempt."""
    deferred = (
        info.run_at
        if info.run_at is not None and info.created_at is not None and info.run_at > info.created_at
        else None
    )
    # A row from SQL whose queue this backend does not list keeps the task's own defaults.
    with contextlib.suppress(InvalidTask):
        task = task.using(
            priority=info.priority, queue_name=info.queue, run_after=deferred, backend=alias
        )
    payload = info.args if isinstance(info.args, dict) else {}
    status = STATUS.get(info.state, TaskResultStatus.READY)
    result = TaskResult(
        task=task,
        id=str(info.id),
        status=status,
        enqueued_at=info.created_at,
        started_at=info.started_at,
        last_attempted_at=info.started_at,
        finished_at=info.finished_at if status in _FINISHED else None,
        args=list(payload.get("args") or []),
        kwargs=dict(payload.get("kwargs") or {}),
        backend=alias,
        errors=[task_error(e) for e in info.errors],
        worker_ids=worker_ids(info),
    )
    if status == TaskResultStatus.SUCCESSFUL:
        object.__setattr__(result, "_return_value", info.result)
    return result


_FINISHED = frozenset({TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED})


def replaced(result: Any, **changes: Any) -> Any:
    """A copy of a TaskResult with some fields changed (they are frozen dataclasses)."""
    copy = TaskResult(
        task=result.task,
        id=result.id,
        status=changes.get("status", result.status),
        enqueued_at=result.enqueued_at,
        started_at=changes.get("started_at", result.started_at),
        last_attempted_at=changes.get("last_attempted_at", result.last_attempted_at),
        finished_at=changes.get("finished_at", result.finished_at),
        args=result.args,
        kwargs=result.kwargs,
        backend=result.backend,
        errors=list(changes.get("errors", result.errors)),
        worker_ids=list(changes.get("worker_ids", result.worker_ids)),
    )
    object.__setattr__(copy, "_return_value", changes.get("return_value"))
    return copy
