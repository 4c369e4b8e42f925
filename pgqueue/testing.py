"""Helpers for testing code that uses pgqueue.

- `inline(app)`: while active, enqueue runs the task at once, in-process, without the
  database; the returned job already holds its result (or failure).
- `assert_enqueued` / `refute_enqueued`: check what is waiting in the queue, by task and
  (a subset of) arguments.
- `drain(app)`: run every due job now, in this process, and return the worker's counters.
- `worker_thread(app)`: a real worker on its own event loop in a thread, for a `with` block.
- `isolated(app)`: your App on a fresh, migrated schema of its own for a block; as a pytest
  plugin (`pytest_plugins = ["pgqueue.testing"]`), the fixture `pgqueue_app` does that per
  test for the App named by the ini option `pgqueue_app`.

They use the real database (apart from inline mode), so what a test sees is what production
would do.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import threading
import traceback
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from ._app import App
from ._client import Client
from ._core import admin
from ._core.spec import JobSpec
from ._db.migrate import drop_schema
from ._db.queries import Queries
from ._runtime.worker import Worker
from ._task import Job, Task
from .errors import JobFailed, UnknownTask

__all__ = [
    "InlineJob",
    "assert_enqueued",
    "drain",
    "drain_async",
    "inline",
    "isolated",
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


def _stuck(thread: threading.Thread, loop_box: list[asyncio.AbstractEventLoop]) -> str:
    """Where a worker that would not stop is waiting: its thread's stack and every task's,
    so that a hang explains itself in the failure instead of only timing out."""
    lines: list[str] = []
    frame = sys._current_frames().get(thread.ident or -1)
    if frame is not None:
        lines += ["thread:", *traceback.format_stack(frame)]
    if loop_box:
        for task in asyncio.all_tasks(loop_box[0]):
            lines.append(f"{task.get_name()}, awaiting:")
            awaited: Any = task.get_coro()
            while awaited is not None:  # the whole await chain, not only the task's frame
                frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
                if frame is not None:
                    lines.append(
                        f"  {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}"
                    )
                awaited = getattr(awaited, "cr_await", None) or getattr(
                    awaited, "gi_yieldfrom", None
                )
    return "\n".join(lines)


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
            raise AssertionError("worker thread did not stop\n" + _stuck(thread, loop_box))
    if errors:
        raise errors[0]


@contextmanager
def isolated(app: App, dsn: str | None = None) -> Iterator[App]:
    """Point `app` (your own, with its tasks) at a fresh, migrated schema of its own for the
    block, then drop that schema: each test sees an empty queue, and tests never see each
    other's jobs. `dsn` defaults to the App's own (a test database)."""
    name = f"pgqueue_test_{uuid.uuid4().hex[:12]}"
    saved = (app.schema, app.queries, app.client, app.database)
    if dsn is not None:
        app.dsn = dsn
    app.schema = name
    app.queries = Queries(name)
    app.client = Client(app.database, app.queries)
    try:
        app.migrate()
        yield app
    finally:
        app.client.close()
        drop_schema(app.database, name)
        app.schema, app.queries, app.client, app.database = saved


def pytest_addoption(parser: Any) -> None:
    parser.addini(
        "pgqueue_app",
        "The App your code enqueues with, as package.module:attribute; the `pgqueue_app`"
        " fixture points it at a fresh schema per test",
        default="",
    )


def _pgqueue_app(request: Any) -> Iterator[App]:
    """Your App, on a fresh migrated schema of its own, dropped after the test.

    Configure it with `pgqueue_app = myproject.tasks:app` in pytest's ini file (the App's own
    DSN, or $PGQUEUE_DSN, names the test database), or override the fixture."""
    path = request.config.getini("pgqueue_app")
    if not path:
        raise LookupError(
            "set `pgqueue_app = package.module:app` in your pytest configuration (ini or"
            " pyproject [tool.pytest.ini_options]) to use the pgqueue_app fixture"
        )
    module_name, _, attr = path.partition(":")
    app = getattr(importlib.import_module(module_name), attr)
    if not isinstance(app, App):
        raise TypeError(f"{path} is not a pgqueue.App")
    with isolated(app) as isolated_app:
        yield isolated_app


try:  # the plugin's fixture, when pytest is there (`pytest_plugins = ["pgqueue.testing"]`)
    import pytest as _pytest
except ImportError:  # pgqueue.testing is usable without pytest
    pass
else:
    pgqueue_app = _pytest.fixture(name="pgqueue_app")(_pgqueue_app)
