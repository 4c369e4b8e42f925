"""What one attempt came to: the Outcome the completer writes, and the pure builders of it."""

from __future__ import annotations

import traceback
from typing import Any, NamedTuple

from ..errors import Fail, JobTimeout, Retry, Snooze, ValidationError
from ..types import JobState
from .claiming import ClaimedJob
from .retry import RetryPolicy, decide_failure
from .validate import encode_result

#: Characters of traceback kept per failed attempt: enough to find the line, bounded so that
#: a job failing in deep recursion cannot bloat its row.
TRACEBACK_LIMIT = 8000


class Outcome(NamedTuple):
    """What one attempt came to, waiting in the completer's buffer."""

    job: ClaimedJob
    result: str | None = None  # JSON text, for a success
    error: dict[str, Any] | None = None
    state: JobState = JobState.COMPLETED  # completed | retrying | failed | cancelled
    duration: float = 0.0
    #: Seconds until a retry, or until a sleeping / snoozed job runs again; None for a
    #: suspended job waiting for its children.
    delay: float | None = 0.0
    #: The task completed its job itself (`ctx.complete`): the worker's own write is then
    #: a no-op by design, not a stale outcome worth a warning.
    quiet: bool = False


def storable(text: str) -> str:
    """jsonb refuses NUL and lone surrogates; an error message must never be refused."""
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def error_record(exc: BaseException, worker: str, kind: str = "error") -> dict[str, Any]:
    """One failed attempt as the job's `errors` keep it. `path` is the exception class's
    import path (`module.QualName`): `type` alone cannot tell two `Error` classes apart, and
    Django's `TaskError.exception_class_path` is exactly this."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    cls = type(exc)
    return {
        "type": storable(cls.__name__),
        "path": storable(f"{cls.__module__}.{cls.__qualname__}"),
        "message": storable(str(exc)[:2000]),
        "traceback": storable(tb[-TRACEBACK_LIMIT:]),
        "kind": kind,
        "worker": worker,
    }


def failure(
    job: ClaimedJob,
    exc: BaseException,
    policy: RetryPolicy,
    worker: str,
    *,
    retryable: bool = True,
    fail_on: tuple[type[BaseException], ...] = (),
) -> Outcome:
    """The outcome of a failed attempt: retried after a backoff, or failed for good.

    `Fail`, and the exceptions a task lists in `fail_on`, are never retried; `Retry(after=)`
    sets the delay itself (and still spends the attempt). `Snooze` is no failure: the job
    runs again after its delay without spending an attempt."""
    if isinstance(exc, Snooze):
        return suspended(job, exc.seconds)
    final = isinstance(exc, Fail) or (bool(fail_on) and isinstance(exc, fail_on))
    delay = exc.after if isinstance(exc, Retry) else None
    decision = decide_failure(
        job.attempt, job.max_attempts, policy, retryable=retryable and not final, delay=delay
    )
    kind = (
        "timeout"
        if isinstance(exc, JobTimeout)
        else "retry"
        if isinstance(exc, Retry)
        else "fail"
        if final
        else "error"
    )
    return Outcome(
        job, error=error_record(exc, worker, kind), state=decision.state, delay=decision.delay
    )


def suspended(job: ClaimedJob, delay: float | None) -> Outcome:
    """The run stopped without ending the job: it waits for its children (delay None) or
    sleeps `delay` seconds; either way it spends no attempt."""
    return Outcome(
        job, state=JobState.WAITING if delay is None else JobState.SCHEDULED, delay=delay
    )


#: Outcome states that suspend a job rather than end or retry it.
SUSPENDED = (JobState.WAITING, JobState.SCHEDULED)


def success(
    job: ClaimedJob,
    result: Any,
    duration: float,
    policy: RetryPolicy,
    worker: str,
    *,
    quiet: bool = False,
) -> Outcome:
    try:
        encoded = encode_result(result)
    except ValidationError as exc:
        # The task ran but returned something that cannot be stored: running it again
        # would repeat its effects for the same outcome.
        return failure(job, exc, policy, worker, retryable=False)
    return Outcome(job, result=encoded, duration=duration, quiet=quiet)


def cancelled(job: ClaimedJob, exc: BaseException, worker: str) -> Outcome:
    """An operator cancelled the run: the job ends `cancelled`, whatever its attempts."""
    return Outcome(job, error=error_record(exc, worker, "cancel"), state=JobState.CANCELLED)
