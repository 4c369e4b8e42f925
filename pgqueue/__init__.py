"""pgqueue: a PostgreSQL-native job queue. Jobs are rows; enqueue is an INSERT in your transaction.

This module is the whole public surface; everything else is private and may change.
"""

from ._app import App
from ._context import JobContext, current_job
from ._core.retry import RetryPolicy
from ._logging import JsonFormatter
from ._logging import configure as configure_logging
from ._runtime.worker import Worker
from ._task import EnqueueOptions, Job, Task, TaskCall
from .errors import (
    ConfigurationError,
    Fail,
    JobFailed,
    JobNotFound,
    JobTimeout,
    LeaseLost,
    PgQueueError,
    QueueFull,
    Retry,
    SchemaNotMigrated,
    Snooze,
    UnknownTask,
    ValidationError,
)
from .types import JobInfo, JobState, QueueLimit, QueueSettings, QueueStats

__version__ = "0.1.0"

__all__ = [
    "App",
    "ConfigurationError",
    "EnqueueOptions",
    "Fail",
    "Job",
    "JobContext",
    "JobFailed",
    "JobInfo",
    "JobNotFound",
    "JobState",
    "JobTimeout",
    "JsonFormatter",
    "LeaseLost",
    "PgQueueError",
    "QueueFull",
    "QueueLimit",
    "QueueSettings",
    "QueueStats",
    "Retry",
    "RetryPolicy",
    "SchemaNotMigrated",
    "Snooze",
    "Task",
    "TaskCall",
    "UnknownTask",
    "ValidationError",
    "Worker",
    "__version__",
    "configure_logging",
    "current_job",
]
