"""Helpers for testing code that uses pgqueue.

- `inline(app)`: while active, enqueue runs the task at once, in-process, without the
  database; the returned job already holds its result (or failure).
- `assert_enqueued` / `refute_enqueued`: check what is waiting in the queue, by task and
  (a subset of) arguments.
- `drain(app)`: run every due job now, in this process, and return the worker's counters.
- `worker_thread(app)`: a real worker on its own event loop in a thread, for a `with` block.

They use the real database (apart from inline mode), so what a test sees is what production
would do.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from ._app import App
from ._core import admin
from ._core.spec import JobSpec
from ._runtime.worker import Worker
from ._task import Job, Task
from .errors import JobFailed, UnknownTask

__all__ = [
    "InlineJob",
    "assert_enqueued",
    "drain",
    "drain_async",
    "inline",
    "refute_enqueued",
    "worker_thread",
]


class InlineJob(Job):
    """A job run at enqueue time by `inline`; `wait()` returns at once."""

    def __init__(self, app: App, job_id: int, task: str, result: Any, error: BaseException | None):
        super().__init__(id=job_id, duplicate=False, app=app)
        self.task = task
        self.result = result
        self.error = error

    def wait(self, timeout: float | None = None) -> Any:
        if self.error is not None:
            error = {"type": type(self.error).__name__, "message": str(self.error)}
            raise JobFailed(self.id, "failed", error) from self.error
        return self.result

    async def wait_async(self, timeout: float | None = None) -> Any:
        return self.wait(timeout)


@contextmanager
def inline(app: App) -> Iterator[list[InlineJob]]:
    """Run tasks at enqueue time; yields the list of jobs run, in order.

    Arguments still go through JSON (as they would through the database), so a test catches
    what would not serialize. A task's exception does not propagate from enqueue (it would not
    in production either); it is kept on the job, and `job.wait()` raises `JobFailed`.
    """
    ran: list[InlineJob] = []
    previous = app.client.inline
    app.client.inline = lambda spec: _run_inline(app, spec, ran)
    try:
        yield ran
    finally:
        app.client.inline = previous


def _run_inline(app: App, spec: JobSpec, ran: list[InlineJob]) -> InlineJob:
    task = app.tasks.get(spec.task)
    kwargs = json.loads(spec.args)
    result: Any = None
    error: BaseException | None = None
    try:
        if task is None:
            raise UnknownTask(f"no task named {spec.task!r} is registered")
        result = task.fn(**kwargs)
        if asyncio.iscoroutine(result):
            result = _run_coroutine(result)
        json.dumps(result, allow_nan=False)
    except Exception as exc:
        error = exc
    job = InlineJob(app, -(len(ran) + 1), spec.task, result, error)
    ran.append(job)
    return job


def _run_coroutine(coro: Any) -> Any:
    """Run an async task to completion, even when called from inside a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(coro)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")


def _task_name(task: Task[Any, Any] | str) -> str:
    return task if isinstance(task, str) else task.name


def _matching(
    app: App, task: Task[Any, Any] | str, args: Mapping[str, Any] | None, queue: str | None
) -> list[dict[str, Any]]:
    plan = admin.enqueued(_task_name(task), json.dumps(dict(args or {})), queue)
    return app.client.run(plan)


def _describe_queue(app: App) -> str:
    rows = app.client.run(admin.enqueued_all())
    if not rows:
        return "nothing is enqueued"
    return "enqueued: " + "; ".join(
        f"{task}({json.dumps(args)}) on {queue}" for task, args, queue in rows
    )


def assert_enqueued(
    app: App,
    task: Task[Any, Any] | str,
    args: Mapping[str, Any] | None = None,
    *,
    queue: str | None = None,
    count: int | None = None,
) -> list[dict[str, Any]]:
    """Assert a job for `task` is waiting (scheduled, available or retrying).

    `args` matches a subset of the job's arguments; `count` demands an exact number of
    matches. Returns the matching rows.
    """
    found = _matching(app, task, args, queue)
    if (count is None and not found) or (count is not None and len(found) != count):
        want = "a job" if count is None else f"{count} job(s)"
        raise AssertionError(
            f"expected {want} for {_task_name(task)} with args {dict(args or {})}"
            f"{' on ' + queue if queue else ''}, found {len(found)}; {_describe_queue(app)}"
        )
    return found


def refute_enqueued(
    app: App,
    task: Task[Any, Any] | str,
    args: Mapping[str, Any] | None = None,
    *,
    queue: str | None = None,
) -> None:
    """Assert no job for `task` (with these arguments) is waiting."""
    found = _matching(app, task, args, queue)
    if found:
        raise AssertionError(
            f"expected no job for {_task_name(task)} with args {dict(args or {})},"
            f" found {len(found)}: ids {[r['id'] for r in found]}"
        )


def drain(app: App, queues: Sequence[str] | None = None, **settings: Any) -> dict[str, int]:
    """Run every job that is due now, in this process; return the worker's counters.

    Jobs scheduled for later (and retries waiting out their backoff) are left alone.
    """
    return asyncio.run(drain_async(app, queues, **settings))


async def drain_async(
    app: App, queues: Sequence[str] | None = None, **settings: Any
) -> dict[str, int]:
    settings.setdefault("concurrency", 4)
    settings.setdefault("handle_signals", False)
    worker = app.worker(queues=queues, burst=True, **settings)
    await worker.run()
    return dict(worker.stats)


@contextmanager
def worker_thread(app: App, worker: Worker | None = None, **settings: Any) -> Iterator[Worker]:
    """A real worker on its own event loop in a thread, for the length of a `with` block.

    On leaving the block a burst worker is waited for (it stops by itself when the queue is
    dry); any other worker is asked to stop gracefully. An error that ended the worker is
    raised from the block's exit.
    """
    settings.setdefault("handle_signals", False)
    if worker is None:
        worker = app.worker(**settings)
    burst = worker.settings.burst
    loop_box: list[asyncio.AbstractEventLoop] = []
    errors: list[BaseException] = []
    started = threading.Event()
    running = worker

    def main() -> None:
        async def run() -> None:
            loop_box.append(asyncio.get_running_loop())
            started.set()
            await running.run()

        try:
            asyncio.run(run())
        except BaseException as exc:
            errors.append(exc)
            started.set()

    thread = threading.Thread(target=main, daemon=True, name="pgqueue-worker-thread")
    thread.start()
    started.wait(10)
    try:
        yield worker
    finally:
        if burst:
            thread.join(60)
        if loop_box and thread.is_alive():
            loop_box[0].call_soon_threadsafe(worker.stop)
        thread.join(60)
        if thread.is_alive():
            raise AssertionError("worker thread did not stop")
    if errors:
        raise errors[0]
