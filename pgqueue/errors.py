"""Every error pgqueue raises on purpose, so callers can catch by type rather than by message."""

from __future__ import annotations

from typing import Any


class PgQueueError(Exception):
    """Base class: catch this to handle any pgqueue error."""


class ConfigurationError(PgQueueError):
    """pgqueue cannot start because of how it was set up (DSN, schema, app path)."""


class SchemaNotMigrated(ConfigurationError):
    """The database lacks the pgqueue schema, or has an older version of it."""


class ValidationError(PgQueueError, ValueError):
    """Input was refused before anything was written (names, arguments, options)."""


class UnknownTask(PgQueueError, LookupError):
    """A job names a task that this process has not registered."""


class QueueFull(PgQueueError):
    """A queue is at its `max_depth`; the job (or the whole `enqueue_many` call) was not
    enqueued. From SQL it is SQLSTATE `PGQ01`, so a trigger's enqueue aborts the
    transaction that caused it; in a caller's transaction, that transaction is aborted too
    (roll it back)."""

    #: The SQLSTATE the enqueue functions raise it with.
    SQLSTATE = "PGQ01"

    def __init__(self, queue: str, depth: int, max_depth: int) -> None:
        self.queue = queue
        self.depth = depth
        self.max_depth = max_depth
        super().__init__(f"queue {queue} is full: {depth} waiting jobs, max_depth {max_depth}")

    def __reduce__(self) -> Any:
        return (type(self), (self.queue, self.depth, self.max_depth))


class JobNotFound(PgQueueError, LookupError):
    """No job has this id (it may have been pruned)."""


class WorkerLost(PgQueueError):
    """Recorded (never raised) for an attempt whose worker stopped heartbeating while running
    it; the job was rescued. It names that error's class for readers that want one."""


class JobFailed(PgQueueError):
    """The awaited job ended `failed` or `cancelled`; `last_error` says why."""

    def __init__(self, job_id: int, state: str, last_error: dict[str, Any] | None) -> None:
        self.job_id = job_id
        self.state = state
        self.last_error = last_error
        reason = ""
        if last_error:
            reason = f": {last_error.get('type')}: {last_error.get('message')}"
        super().__init__(f"job {job_id} {state}{reason}")


class JobTimeout(PgQueueError, TimeoutError):
    """A task ran past its `timeout` and was cancelled."""


class Retry(PgQueueError):
    """Raised by a task: run this job again after `after` seconds (an API's `Retry-After`).

    It spends an attempt like any failure, so a job that keeps asking ends `failed` after
    `max_attempts`; without `after`, the task's retry policy decides the delay."""

    def __init__(self, after: float | None = None, reason: str = "") -> None:
        if after is not None and (
            isinstance(after, bool) or not isinstance(after, (int, float)) or not after >= 0
        ):
            raise ValueError(
                f"Retry(after=) must be a non-negative number of seconds, not {after!r}"
            )
        self.after = None if after is None else float(after)
        super().__init__(reason or ("retry requested" + (f" in {after:g} s" if after else "")))


class Fail(PgQueueError):
    """Raised by a task: this job fails now, for good; no retry however many attempts remain."""


class Snooze(PgQueueError):
    """Raised by a task: run this job again in `seconds`, without spending an attempt (the
    work is not due yet: a resource is busy, a file has not arrived)."""

    #: The longest snooze: a job parked for longer is better enqueued with `run_at`.
    MAX_SECONDS = 366 * 86400.0

    def __init__(self, seconds: float) -> None:
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, (int, float))
            or not 0 <= seconds <= self.MAX_SECONDS
        ):
            raise ValueError(
                f"Snooze(seconds) takes 0 to {self.MAX_SECONDS:g} seconds, not {seconds!r}"
            )
        self.seconds = float(seconds)
        super().__init__(f"snoozed for {seconds:g} s")


class LeaseLost(PgQueueError):
    """This run no longer holds its job: it was rescued and claimed again (the worker was
    cut off or stalled past its heartbeat timeout). Raised by `ctx.complete(conn=...)` and
    by durable steps, so the caller's transaction rolls back and its effect is not written
    twice."""


__all__ = [
    "ConfigurationError",
    "Fail",
    "JobFailed",
    "JobNotFound",
    "JobTimeout",
    "LeaseLost",
    "PgQueueError",
    "QueueFull",
    "Retry",
    "SchemaNotMigrated",
    "Snooze",
    "UnknownTask",
    "ValidationError",
    "WorkerLost",
]
