"""Waiting for a job to finish, as one plan for `job.wait()` and `job.wait_async()`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import JobFailed
from ..types import FINISHED_STATES, JobState
from .admin import get_job
from .plan import AwaitNotify, Listen, Plan

#: Seconds between re-checks while listening: a lost notification costs at most this long.
RECHECK_LISTENING = 5.0
#: Re-checks without a listening connection (behind a transaction-mode pooler) back off from
#: the first to the second value, so a short job is seen soon and a long one costs little.
RECHECK_POLLING = (0.05, 1.0)


def wait(job_id: int, timeout: float | None, channel: str, clock: Callable[[], float]) -> Plan[Any]:
    """The job's result, or JobFailed / TimeoutError.

    Wakes on the NOTIFY that workers send when they record outcomes, re-checking the row at
    most every few seconds in case a notification is lost, so it never busy-polls."""
    deadline = None if timeout is None else clock() + timeout
    listening = yield Listen(channel)
    pause = RECHECK_LISTENING if listening else RECHECK_POLLING[0]
    while True:
        info = yield from get_job(job_id)
        if info.state is JobState.COMPLETED:
            return info.result
        if info.state in FINISHED_STATES:
            raise JobFailed(info.id, info.state.value, info.last_error)
        remaining = None if deadline is None else deadline - clock()
        if remaining is not None and remaining <= 0:
            raise TimeoutError(f"job {job_id} did not finish within {timeout} s")
        yield AwaitNotify(pause if remaining is None else min(remaining, pause))
        if not listening:
            pause = min(pause * 2, RECHECK_POLLING[1])
