"""What one enqueue writes: a JobSpec per job, and how a bulk call is cut into statements.

Defaults a caller did not choose (queue `default`, 3 attempts, priority 0) are decided once,
in the database's enqueue functions (`enqueue_job`, `enqueue_many`): a spec carries None for
them, so Python, SQL clients and triggers can never disagree about a default.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, NamedTuple

#: Rows per statement in `enqueue_many`: big enough to amortise the statement, small enough
#: that the client's encoding of the next batch overlaps the server's insert of this one
#: (bulk enqueue of 20,000 jobs, pipelined: 75k jobs/s in batches of 5,000, 90k in 2,000,
#: 82k in 1,000) and that one statement's JSON document stays small.
ENQUEUE_CHUNK = 2000


class JobSpec(NamedTuple):
    """One job to insert, validated and encoded (`args` is JSON text). A tuple: bulk
    enqueue builds one per job, and a frozen dataclass costs several times more to build."""

    task: str
    args: str
    queue: str | None = None
    priority: int | None = None
    run_at: datetime | None = None
    delay: float | None = None
    unique_key: str | None = None
    max_attempts: int | None = None
    timeout: float | None = None
    #: The enqueuer's trace context as JSON (OpenTelemetry), or None: not traced.
    trace: str | None = None
    group_key: str | None = None
    expires_at: datetime | None = None
    #: Seconds from now (the database's clock) until it expires, when expires_at is not set.
    expires_in: float | None = None

    def params(self) -> dict[str, Any]:
        """The parameters of `job_enqueue` (and of `job_enqueue_traced`, with `trace`)."""
        params = {
            "task": self.task,
            "args": self.args,
            "queue": self.queue,
            "priority": self.priority,
            "run_at": self.run_at,
            "delay": self.delay,
            "unique_key": self.unique_key,
            "max_attempts": self.max_attempts,
            "timeout": self.timeout,
            "group_key": self.group_key,
            "expires_at": self.expires_at,
            "expires_in": self.expires_in,
        }
        if self.trace is not None:
            params["trace"] = self.trace
        return params


def batched(specs: Iterable[JobSpec], size: int = ENQUEUE_CHUNK) -> Iterator[list[JobSpec]]:
    """`specs` in lists of `size`, each taken from them only when asked for (so a generator
    of specs is validated and encoded one batch at a time)."""
    each = iter(specs)
    while batch := list(itertools.islice(each, size)):
        yield batch


def chunk_params(chunk: Sequence[JobSpec]) -> dict[str, Any]:
    """Parameters of `job_enqueue_many`: the jobs of one bulk call differ only in their
    arguments (one task, one set of options), which travel as a single JSON array."""
    first = chunk[0]
    return {
        "task": first.task,
        "queue": first.queue,
        "priority": first.priority,
        "run_at": first.run_at,
        "delay": first.delay,
        "max_attempts": first.max_attempts,
        "timeout": first.timeout,
        "group_key": first.group_key,
        "expires_at": first.expires_at,
        "expires_in": first.expires_in,
        "args": "[" + ",".join([s.args for s in chunk]) + "]",
        "trace": first.trace,
    }
