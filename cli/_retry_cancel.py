"""`retry` and `cancel`: by job id (each id's result reported) or in bulk (counted, and
confirmed first)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Annotated, Any

import typer

import pgqueue

from ._common import (
    DsnOption,
    JsonOption,
    SchemaOption,
    YesOption,
    _app,
    _confirm,
)
from ._output import (
    errors,
    fail,
    out,
    print_json,
    report,
)


@dataclasses.dataclass(frozen=True)
class _Done:
    """What a command did to one of the job ids it was given."""

    job: int | str
    result: str  # a word for scripts: cancelled, cancel_requested, not_found, ...
    text: str  # the same for people
    ok: bool
    state: str | None = None  # the job's state, when it is why nothing was done

    def line(self) -> str:
        return f"job {self.job}: {self.text}"

    def data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.job, "result": self.result}
        if self.state is not None:
            data["state"] = self.state
        return data


_FINISHED = ("completed", "failed", "cancelled")


def _job_id(raw: str) -> int | None:
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if 0 < value < 2**63 else None


def _per_id(
    job_ids: list[str],
    one: Callable[[pgqueue.App, int], _Done],
    *,
    verb: str,
    dsn: str | None,
    schema: str | None,
    as_json: bool,
) -> None:
    """Apply `one(app, id)` to every id and report each result as it comes, so that one bad
    id neither hides what was done to the others nor stops them. Exit 1 if any failed."""
    done: list[_Done] = []
    try:
        with errors():
            qapp = _app(dsn, schema)
            for raw in job_ids:
                job_id = _job_id(raw)
                result = (
                    _Done(raw, "invalid_id", f"not {verb}: invalid id", False)
                    if job_id is None
                    else one(qapp, job_id)
                )
                done.append(result)
                if not as_json:
                    out.print(result.line(), highlight=False, style=None if result.ok else "red")
    finally:
        # Even when the database fails half-way: what was done is reported.
        if as_json and done:
            counts: dict[str, int] = {}
            for d in done:
                counts[d.result] = counts.get(d.result, 0) + 1
            print_json({"jobs": [d.data() for d in done], **counts})
    failed = [d for d in done if not d.ok]
    if failed:
        fail(f"{len(failed)} of {len(done)} job(s) not {verb}")


def _left_alone(qapp: pgqueue.App, job_id: int, verb: str) -> _Done:
    """Why a job was left alone: it does not exist, or its state did not allow it."""
    try:
        state = qapp.get_job(job_id).state.value
    except pgqueue.JobNotFound:
        return _Done(job_id, "not_found", f"not {verb}: not found", False)
    if state in _FINISHED:
        return _Done(job_id, "already_finished", f"not {verb}: already {state}", False, state)
    return _Done(job_id, f"not_{verb}", f"not {verb}: it is {state}", False, state)


def _cancel_one(qapp: pgqueue.App, job_id: int) -> _Done:
    if not qapp.cancel(job_id):
        return _left_alone(qapp, job_id, "cancelled")
    state = qapp.get_job(job_id).state.value
    if state == "running":
        return _Done(
            job_id,
            "cancel_requested",
            "cancel requested: its worker stops it at its next heartbeat",
            True,
        )
    if state == "cancelled":
        return _Done(job_id, "cancelled", "cancelled", True)
    # It was running, and finished before the request could stop it.
    return _Done(
        job_id, "already_finished", f"not cancelled: it finished first, {state}", False, state
    )


def _retry_one(qapp: pgqueue.App, job_id: int) -> _Done:
    try:
        if qapp.retry(job_id):
            return _Done(job_id, "retried", "retrying", True)
    except pgqueue.ValidationError as exc:  # another unfinished job holds its unique_key
        return _Done(job_id, "conflict", f"not retried: {exc}", False)
    return _left_alone(qapp, job_id, "retried")


def _filters(queue: str | None, task: str | None = None, state: str | None = None) -> str:
    """` (queue emails, state available)`: what a bulk command was limited to."""
    parts = [f"{k} {v}" for k, v in (("queue", queue), ("task", task), ("state", state)) if v]
    return f" ({', '.join(parts)})" if parts else ""


def _count_failed(qapp: pgqueue.App, queue: str | None) -> int:
    """How many failed jobs `retry_failed(queue)` would retry (of those sharing a unique_key,
    the newest; none whose key an unfinished job holds), counted in the database.

    Not from `queue_stats()`: its `failed` counts the last hour only, and an outage that
    failed jobs for longer is what `retry --failed --fresh` is for."""
    try:
        return qapp.count_failed(queue)
    except pgqueue.ValidationError as exc:  # a queue name that cannot be one
        fail(str(exc), code=2)


def _retry_failed(
    queue: str | None, fresh: bool, yes: bool, dsn: str | None, schema: str | None, as_json: bool
) -> None:
    where = _filters(queue)
    with errors():
        qapp = _app(dsn, schema)
        count = _count_failed(qapp, queue)
        if count == 0:
            report(as_json, f"no failed jobs{where}: nothing retried", {"retried": 0})
            return
        if not yes:
            budget = " with a full attempt budget" if fresh else ", one more attempt each"
            _confirm(
                f"this would retry {count} failed job(s){where}{budget}",
                "Retry them?",
                "retry not confirmed: nothing retried",
                as_json,
            )
        retried = qapp.retry_failed(queue, fresh=fresh)
    report(as_json, f"retrying {retried} failed job(s){where}", {"retried": retried})


def retry(
    job_ids: Annotated[list[str] | None, typer.Argument(metavar="ID")] = None,
    failed: Annotated[bool, typer.Option("--failed", help="Every failed job.")] = False,
    queue: Annotated[
        str | None, typer.Option("--queue", "-q", help="With --failed: only this queue's.")
    ] = None,
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh",
            help="With --failed: a full attempt budget again (after an outage),"
            " instead of one more attempt.",
        ),
    ] = False,
    yes: YesOption = False,
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run failed or cancelled jobs again: by id, or every failed one (--failed).

    With ids, each one's result is reported; the exit code is 1 if any was not retried.
    --failed counts them and asks first; with no terminal to ask on, or --json, it needs --yes.
    """
    if failed == bool(job_ids):
        fail("give job ids, or --failed [--queue Q] [--fresh], not both", code=2)
    if not failed and (queue is not None or fresh):
        fail("--queue and --fresh go with --failed, not with job ids", code=2)
    if failed:
        _retry_failed(queue, fresh, yes, dsn, schema, as_json)
        return
    _per_id(job_ids or [], _retry_one, verb="retried", dsn=dsn, schema=schema, as_json=as_json)


def _cancel_matching(
    queue: str | None,
    task: str | None,
    state: str | None,
    yes: bool,
    dsn: str | None,
    schema: str | None,
    as_json: bool,
) -> None:
    where = _filters(queue, task, state)
    data: dict[str, Any] = {"queue": queue, "task": task, "state": state}
    with errors():
        qapp = _app(dsn, schema)
        try:
            count = qapp.count_unfinished(queue, task, state)
        except pgqueue.ValidationError as exc:  # a state that is not an unfinished one
            fail(f"cannot cancel by these filters: {exc}", code=2)
        if count == 0:
            report(
                as_json,
                f"no unfinished jobs match{where}: nothing cancelled",
                {"cancelled": 0, "running": 0, **data},
            )
            return
        if not yes:
            running = _running(qapp, queue, task, state)
            _confirm(
                f"this would cancel {count} unfinished job(s){where}"
                + (f", {running} of them running" if running else ""),
                "Cancel them?",
                "cancel not confirmed: nothing cancelled",
                as_json,
            )
        # Counted just before: cancel_many reports one total, running jobs (only asked to
        # stop) included.
        running = _running(qapp, queue, task, state)
        cancelled = qapp.cancel_many(queue, task, state)
    running = min(running, cancelled)
    message = f"cancelled {cancelled} job(s){where}"
    if running:
        message += (
            f"; {running} of them running, asked to stop: their workers stop them at the"
            " next heartbeat"
        )
    report(as_json, message, {"cancelled": cancelled, "running": running, **data})


def _running(qapp: pgqueue.App, queue: str | None, task: str | None, state: str | None) -> int:
    if state not in (None, "running"):
        return 0
    return qapp.count_unfinished(queue, task, "running")


def cancel(
    job_ids: Annotated[list[str] | None, typer.Argument(metavar="ID")] = None,
    queue: Annotated[
        str | None, typer.Option("--queue", "-q", help="Every unfinished job of this queue.")
    ] = None,
    task: Annotated[
        str | None, typer.Option("--task", help="Every unfinished job of this task.")
    ] = None,
    state: Annotated[
        str | None,
        typer.Option(
            "--state", help="Only jobs in this state: scheduled, available, retrying or running."
        ),
    ] = None,
    yes: YesOption = False,
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel jobs, by id or by filter: queued ones at once, running ones at their worker's
    next heartbeat.

    With ids, each id's result is reported; the exit code is 1 if any was not cancelled.
    With filters (at least one), it counts the jobs and asks first; with no terminal to ask
    on, or --json, it needs --yes.
    """
    filtered = any(v is not None for v in (queue, task, state))
    if job_ids and filtered:
        fail("give job ids, or filters (--queue, --task, --state), not both", code=2)
    if not job_ids and not filtered:
        fail(
            "give job ids, or at least one filter (--queue, --task, --state):"
            " an unfiltered cancel would stop every job",
            code=2,
        )
    if not job_ids:
        _cancel_matching(queue, task, state, yes, dsn, schema, as_json)
        return
    _per_id(job_ids, _cancel_one, verb="cancelled", dsn=dsn, schema=schema, as_json=as_json)
