"""Plain data types shared by every layer; this module imports nothing from pgqueue."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class JobState(str, enum.Enum):
    """The lifecycle of a job row."""

    #: Waiting for its `run_at`; becomes claimable when that time comes.
    SCHEDULED = "scheduled"
    #: Ready to be claimed by a worker.
    AVAILABLE = "available"
    #: Started by a worker, under a lease; only that lease may change the row.
    RUNNING = "running"
    #: Claimed by a worker ahead of a free slot, waiting in its buffer: leased like a running
    #: job, but not started, so no attempt is spent yet and a crash costs it nothing.
    CLAIMED = "claimed"
    #: A workflow job waiting for the jobs it depends on (`after=`) or, suspended, for the
    #: children it gathers; it holds no slot and has spent no attempt on the wait.
    WAITING = "waiting"
    #: An attempt failed; the next one waits for its backoff `run_at`.
    RETRYING = "retrying"
    #: The task returned; `result` holds its JSON return value.
    COMPLETED = "completed"
    #: Attempts exhausted (or not retryable); `errors` holds every attempt's error.
    FAILED = "failed"
    #: Cancelled before it ran.
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED_STATES


FINISHED_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})


@dataclass(frozen=True)
class JobInfo:
    """A snapshot of one job as the database sees it (`app.get_job`)."""

    id: int
    task: str
    queue: str
    state: JobState
    priority: int
    attempt: int
    max_attempts: int
    args: dict[str, Any]
    result: Any
    errors: list[dict[str, Any]] = field(default_factory=list)
    unique_key: str | None = None
    rescue_count: int = 0
    created_at: datetime | None = None
    run_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    worker: str | None = None
    #: The trace context of the enqueuing request (OpenTelemetry carrier: `traceparent`,
    #: maybe `tracestate`), when it was traced.
    trace: dict[str, str] | None = None
    #: The topic a publish made this job for, else None.
    topic: str | None = None
    #: The schedule that made this job, and the slot it is for, else None.
    schedule: str | None = None
    scheduled_for: datetime | None = None
    #: The tenant / customer / API key the job belongs to (group limits, fairness).
    group_key: str | None = None
    #: Not started by then: cancelled as expired.
    expires_at: datetime | None = None

    @property
    def last_error(self) -> dict[str, Any] | None:
        return self.errors[-1] if self.errors else None


@dataclass(frozen=True)
class QueueStats:
    """One row of the `queue_stats` view."""

    queue: str
    scheduled: int
    available: int
    running: int
    retrying: int
    completed: int
    failed: int
    cancelled: int
    lag_seconds: float
    failed_last_hour: int
    completed_last_minute: int
    paused: bool
    #: Claimed by a worker ahead of a free slot and not started yet (in its buffer).
    claimed: int = 0
    #: Workflow jobs waiting for their dependencies or for the children they gather.
    waiting: int = 0
    #: Waiting jobs (scheduled, available, retrying): what `max_depth` limits.
    depth: int = 0
    max_depth: int | None = None
    #: Live worker processes that serve this queue; 0 with waiting jobs means nothing will
    #: run them (`pgqueue status` warns).
    live_workers: int = 0


@dataclass(frozen=True)
class QueueSettings:
    """A queue's flow-control settings (`app.configure_queue`); None: not set."""

    queue: str
    concurrency: int | None = None
    #: Job starts per period, as text: `"20/s"`, `"100/m"`, `"5/10s"`.
    rate: str | None = None
    group_concurrency: int | None = None
    group_rate: str | None = None
    fair: bool = False
    max_depth: int | None = None
    paused: bool = False


@dataclass(frozen=True)
class QueueLimit:
    """One row of `pgqueue.queue_limits`: a queue (group_key None) or one of its busy
    groups, with its limits and their use now."""

    queue: str
    group_key: str | None
    #: The concurrency limit (group_concurrency on a group's row), and slots held now.
    concurrency: int | None
    running: int
    #: The rate limit, the starts in its current window, and the starts still permitted.
    rate: str | None
    starts: int | None
    tokens: int | None
    #: Jobs not yet started (scheduled, available, retrying).
    waiting: int
    fair: bool
    max_depth: int | None
    paused: bool
