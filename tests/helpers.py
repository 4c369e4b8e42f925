"""Running a real worker from a test: in a thread of this process, or as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from pgqueue.testing import worker_thread

__all__ = ["spawn_worker", "started_workers", "wait_until", "worker_thread"]

ROOT = Path(__file__).resolve().parent.parent


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a condition with a hard bound, failing with a message instead of hanging."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


class WorkerProcess(subprocess.Popen[bytes]):
    """A worker subprocess whose output (stdout and stderr) goes to a file, not a pipe.

    Nobody reads a pipe until the test ends, and once its 64 KiB buffer is full the worker's
    next log line blocks while holding the logging lock: every thread, the event loop
    included, then stops at its next log call. A server crash makes a worker log a warning
    per interrupted job, which was enough to wedge workers in the crash test.
    `communicate()` returns what the process wrote, like a pipe's would.
    """

    def __init__(self, args: list[str], **kwargs: Any) -> None:
        # Lives as long as this object: closed when it is collected.
        self._output = tempfile.TemporaryFile()  # noqa: SIM115
        super().__init__(args, stdout=self._output, stderr=subprocess.STDOUT, **kwargs)

    def communicate(self, input: Any = None, timeout: float | None = None) -> tuple[bytes, None]:
        self.wait(timeout)  # TimeoutExpired, as from a pipe's communicate
        self._output.seek(0)
        return self._output.read(), None


def started_workers(conn: psycopg.Connection[Any]) -> int:
    """Workers past start-up: registered and heartbeating (the heartbeat begins only once
    start-up is over). A worker merely registered may still be announcing its tasks; one
    signalled or restarted into then exits, by design."""
    row = conn.execute(
        "SELECT count(*) FROM pgqueue.workers WHERE stopped_at IS NULL"
        " AND heartbeat_at > started_at"
    ).fetchone()
    return int(row[0]) if row else 0


def spawn_worker(app_path: str, dsn: str, *args: str) -> WorkerProcess:
    """`pgqueue worker APP` as a real process (so it can be signalled or killed)."""
    env = {**os.environ, "PGQUEUE_DSN": dsn, "PYTHONPATH": str(ROOT)}
    return WorkerProcess(
        [sys.executable, "-m", "pgqueue.cli", "worker", app_path, *args], cwd=ROOT, env=env
    )


T = TypeVar("T")


def race(n: int, fn: Callable[[Callable[[], None]], T], timeout: float = 60) -> list[T]:
    """Run `fn` in `n` threads at once and return their results; re-raise the first error.

    `fn` receives a `go()` to call at the point where the threads should collide (after
    connecting, say), so the contended part starts together in every thread.
    """
    barrier = threading.Barrier(n)
    results: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(fn(lambda: barrier.wait(timeout)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    if errors:
        raise errors[0]
    assert len(results) == n, "a racing thread did not finish"
    return results
