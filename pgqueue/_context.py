"""What a running task may ask about its own job: `pgqueue.current_job()`."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from datetime import datetime

from ._core.claiming import ClaimedJob


@dataclass(frozen=True)
class JobContext:
    """What a running task may ask about its own job (`pgqueue.current_job()`)."""

    id: int
    task: str
    queue: str
    attempt: int
    max_attempts: int
    #: For a job a schedule made: the slot it is for (the time the cron expression named,
    #: not when the job started), the same for every attempt. None for any other job.
    scheduled_for: datetime | None = None


#: The claimed row itself; the JobContext is built only for a task that asks for it.
current: contextvars.ContextVar[ClaimedJob] = contextvars.ContextVar("pgqueue_current_job")


def current_job() -> JobContext:
    """The job the calling task is running for; raises LookupError outside a task."""
    try:
        job = current.get()
    except LookupError:
        raise LookupError("current_job() is only available inside a running task") from None
    return JobContext(job.id, job.task, job.queue, job.attempt, job.max_attempts, job.scheduled_for)
