"""A file every process of a test appends to (one short line per write, so O_APPEND keeps
lines whole across processes): tasks record that they ran, receivers what signals they got."""

import json
import os
import time

try:
    from django.tasks.signals import task_enqueued, task_finished, task_started
except ImportError:  # Django 5.2 with the backport
    from django_tasks.signals import task_enqueued, task_finished, task_started


def path() -> str:
    return os.environ["PGQUEUE_DJANGO_RECORD"]


def record(kind: str, **fields: object) -> None:
    line = json.dumps({"kind": kind, "pid": os.getpid(), **fields}) + "\n"
    fd = os.open(path(), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def lines() -> list[dict]:
    try:
        with open(path()) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def wait_for(predicate, timeout: float, what: str) -> None:
    """A bounded wait: poll, then fail with what was awaited."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def _receiver(name: str):
    def receive(sender, task_result, **kwargs) -> None:
        record(
            "signal",
            signal=name,
            sender=f"{sender.__module__}.{sender.__qualname__}",
            id=task_result.id,
            status=str(task_result.status),
            task=task_result.task.module_path,
            attempts=task_result.attempts,
            errors=[e.exception_class_path for e in task_result.errors],
        )

    return receive


_RECEIVERS = {name: _receiver(name) for name in ("enqueued", "started", "finished")}


def connect_signals() -> None:
    task_enqueued.connect(_RECEIVERS["enqueued"], dispatch_uid="djapp.enqueued")
    task_started.connect(_RECEIVERS["started"], dispatch_uid="djapp.started")
    task_finished.connect(_RECEIVERS["finished"], dispatch_uid="djapp.finished")
