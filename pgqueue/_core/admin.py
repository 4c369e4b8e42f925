"""The operator and read API as plans: validation first, then the named query, then rows
turned into typed values. The App's sync and async methods are shells over these."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import JobNotFound, ValidationError
from ..types import JobInfo, JobState, QueueStats
from .plan import DuplicateKey, Plan, Query
from .topics import check_topic
from .validate import check_group_key, check_int, check_name, check_seconds


def job_info(row: Mapping[str, Any]) -> JobInfo:
    """A `job_get` row (by column name) as a JobInfo."""
    return JobInfo(**{**row, "state": JobState(row["state"]), "errors": list(row["errors"] or [])})


def get_job(job_id: int) -> Plan[JobInfo]:
    params = {"id": check_int("job id", job_id, bits=64)}
    rows = yield Query("job_get", params, columns=True)
    if not rows:
        raise JobNotFound(f"no job with id {job_id}")
    return job_info(rows[0])


def cancel(job_id: int) -> Plan[bool]:
    """Cancel a job; False if it is already finished (or does not exist)."""
    params = {"id": check_int("job id", job_id, bits=64)}
    return bool((yield Query("job_cancel", params)))


def retry(job_id: int) -> Plan[bool]:
    params = {"id": check_int("job id", job_id, bits=64)}
    try:
        rows = yield Query("job_retry", params)
    except DuplicateKey:
        raise ValidationError(
            f"job {job_id} cannot run again: an unfinished job holds its unique_key"
        ) from None
    return bool(rows)


def _failed_filters(queue: str | None, task: str | None) -> dict[str, Any]:
    for kind, name in (("queue", queue), ("task", task)):
        if name is not None:
            check_name(kind, name)
    return {"queue": queue, "task": task}


#: Times a bulk retry is tried again when an enqueue took one of its jobs' unique_keys
#: between its check and its update (each try re-checks every key).
RETRY_FAILED_TRIES = 3


def retry_failed(queue: str | None, fresh: bool = False, task: str | None = None) -> Plan[int]:
    """Failed jobs whose unique_key another job holds stay failed (migration 019)."""
    params = {**_failed_filters(queue, task), "fresh": bool(fresh)}
    for _ in range(RETRY_FAILED_TRIES):
        try:
            return len((yield Query("job_retry_failed", params)))
        except DuplicateKey:
            continue
    raise ValidationError(
        "the failed jobs could not be retried: new jobs kept taking their unique_keys"
    )


def count_failed(queue: str | None, task: str | None) -> Plan[int]:
    """How many failed jobs match: what `retry_failed` with these filters would retry."""
    rows = yield Query("job_count_failed", _failed_filters(queue, task))
    return int(rows[0][0])


#: States a bulk cancel may name: the unfinished ones.
CANCELLABLE = ("scheduled", "available", "retrying", "running", "waiting")


def _bulk_filters(queue: str | None, task: str | None, state: str | None) -> dict[str, Any]:
    for kind, name in (("queue", queue), ("task", task)):
        if name is not None:
            check_name(kind, name)
    if state is not None and state not in CANCELLABLE:
        raise ValidationError(f"cancel_many state must be one of {', '.join(CANCELLABLE)}")
    return {"queue": queue, "task": task, "state": state}


def count_unfinished(queue: str | None, task: str | None, state: str | None) -> Plan[int]:
    rows = yield Query("job_count_matching", _bulk_filters(queue, task, state))
    return int(rows[0][0])


def cancel_many(queue: str | None, task: str | None, state: str | None) -> Plan[tuple[int, int]]:
    """(cancelled now, asked to stop because running)."""
    rows = yield Query("job_cancel_many", _bulk_filters(queue, task, state))
    running = sum(1 for r in rows if r[1])
    return len(rows) - running, running


def pause(queue: str, paused: bool) -> Plan[None]:
    params = {"queue": check_name("queue", queue), "paused": paused}
    yield Query("queue_pause", params)
    if not paused:
        yield Query("queue_notify", {"queues": [queue]})


def prune(
    older_than: float | None,
    batch: int,
    progress: Callable[[int], None] | None = None,
    *,
    max_batches: int | None = None,
) -> Plan[int]:
    """Retention in batches until a short one (or `max_batches`, the leader's pass): on an
    autocommit connection each batch is its own short transaction, so no long lock is held.
    Returns how many were deleted. The one prune loop: `App.prune` and the Pruner both run it."""
    check_prune(older_than, batch)
    total = 0
    batches = 0
    while True:
        rows = yield Query("job_prune", {"older_than": older_than, "batch": batch})
        total += len(rows)
        batches += 1
        if progress is not None:
            progress(total)
        if len(rows) < batch or (max_batches is not None and batches >= max_batches):
            return total


def prune_count(older_than: float | None) -> Plan[int]:
    check_prune(older_than, 1)
    rows = yield Query("job_prune_count", {"older_than": older_than})
    return int(rows[0][0])


def stuck_count() -> Plan[int]:
    rows = yield Query("stuck_count")
    return int(rows[0][0])


def check_prune(older_than: float | None, batch: int) -> None:
    if older_than is not None:
        check_seconds("older_than", older_than)
    check_int("batch", batch, minimum=1)


def list_jobs(
    *,
    state: str | None,
    queue: str | None,
    task: str | None,
    older_than: float | None,
    newer_than: float | None,
    limit: int,
    before: int | None = None,
    after: int | None = None,
    group_key: str | None = None,
    topic: str | None = None,
    schedule: str | None = None,
) -> Plan[list[dict[str, Any]]]:
    """Newest first. `before` / `after` are keyset bounds (ids): the page below the smallest
    id of the page shown, or the page just above its largest, each as cheap as the first.
    `topic` / `schedule`: only the jobs a publish on that topic / that schedule made."""
    if state is not None:
        JobState(state)  # ValueError names the bad state
    if group_key is not None:
        check_group_key(group_key)
    for kind, name in (("queue", queue), ("task", task)):
        if name is not None:
            check_name(kind, name)
    params = {
        "state": state,
        "queue": queue,
        "task": task,
        "group_key": group_key,
        "topic": None if topic is None else check_topic(topic),
        "schedule": None if schedule is None else check_name("schedule", schedule),
        "older_than": older_than,
        "newer_than": newer_than,
        "limit": check_int("limit", limit, minimum=1),
        "before": None if before is None else check_int("before", before, bits=64),
        "after": None if after is None else check_int("after", after, bits=64),
    }
    # One statement per state (a literal filter, so a rare state is read through its
    # partial index); the state is in the statement's name, not a parameter.
    del params["state"]
    suffix = f"_{state}" if state is not None else ""
    if after is not None and before is None:
        # Upwards from the bound, then newest first like every other page.
        newer: list[dict[str, Any]] = yield Query(f"job_list_newer{suffix}", params, columns=True)
        return newer[::-1]
    rows: list[dict[str, Any]] = yield Query(f"job_list{suffix}", params, columns=True)
    return rows


def running_jobs(limit: int) -> Plan[list[dict[str, Any]]]:
    """Running jobs, longest-running first, with the id of the worker running each."""
    params = {"limit": check_int("limit", limit, minimum=1)}
    rows: list[dict[str, Any]] = yield Query("job_running_list", params, columns=True)
    return rows


def listing(query: str, limit: int | None = None) -> Plan[list[dict[str, Any]]]:
    """Rows of an operator listing (`stuck_list`, `worker_list`, `recent_failures`)."""
    params = None if limit is None else {"limit": check_int("limit", limit, minimum=1)}
    rows: list[dict[str, Any]] = yield Query(query, params, columns=True)
    return rows


def throughput(bucket: float, buckets: int) -> Plan[list[tuple[int, int]]]:
    """(completed, failed) per bucket of `bucket` seconds, oldest first."""
    rows = yield Query("throughput", {"bucket": bucket, "buckets": buckets})
    by_age = {r[0]: (int(r[1]), int(r[2])) for r in rows}
    return [by_age.get(age, (0, 0)) for age in range(buckets - 1, -1, -1)]


def unfinished(job_ids: Sequence[int]) -> Plan[int]:
    rows = yield Query("job_count_unfinished", {"ids": list(job_ids)})
    return int(rows[0][0])


def queue_stats() -> Plan[list[QueueStats]]:
    return [QueueStats(**row) for row in (yield Query("queue_stats", None, columns=True))]


def enqueued(task: str, args_json: str, queue: str | None) -> Plan[list[dict[str, Any]]]:
    """Waiting jobs of a task whose arguments contain `args_json` (testing helpers)."""
    params = {"task": task, "args": args_json, "queue": queue}
    rows: list[dict[str, Any]] = yield Query("job_enqueued", params, columns=True)
    return rows


def enqueued_all() -> Plan[list[tuple[Any, ...]]]:
    rows: list[tuple[Any, ...]] = yield Query("job_enqueued_all")
    return rows
