"""Commands that look: status, tasks, jobs, top, job."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer
from rich.text import Text

from pgqueue._logging import redact

from ._common import (
    DsnOption,
    JsonOption,
    SchemaOption,
    _app,
    parse_duration,
)
from ._output import (
    errors,
    fail,
    out,
    print_json,
)
from ._tables import (
    job_table,
    jobs_table,
    limits_table,
    queue_table,
    status_warnings,
    tasks_table,
    workflow_tree,
)

#: How many stuck jobs `status` lists to break its warning down (the count is exact).
STUCK_SAMPLE = 1000


def status(dsn: DsnOption = None, schema: SchemaOption = None, as_json: JsonOption = False) -> None:
    """Queues at a glance: counts per state, lag, throughput, failures."""
    with errors():
        qapp = _app(dsn, schema)
        stats = qapp.queue_stats()
        limits = qapp.queue_limits()
        stuck = qapp.stuck_jobs(limit=STUCK_SAMPLE)
        stuck_count = qapp.count_stuck()
    if as_json:
        print_json(
            {"queues": stats, "limits": limits, "stuck_jobs": stuck, "stuck_count": stuck_count}
        )
        return
    if not stats:
        out.print("no queues yet: nothing has been enqueued")
        return
    out.print(queue_table(stats))
    if limits:
        out.print(limits_table(limits))
    for line in status_warnings(stats, stuck, stuck_count):
        out.print(f"[bold yellow]warning:[/] {line}", highlight=False)


def tasks(dsn: DsnOption = None, schema: SchemaOption = None, as_json: JsonOption = False) -> None:
    """The task catalog: every task a worker or App registered, with the defaults that SQL
    enqueue and enqueue by name apply to it."""
    with errors():
        catalog = _app(dsn, schema).tasks_catalog()
    if as_json:
        print_json({"tasks": catalog})
        return
    if not catalog:
        out.print("no tasks registered yet: start a worker (or enqueue from an App)")
        return
    out.print(tasks_table(catalog))


def jobs(
    state: Annotated[str | None, typer.Option("--state", help="e.g. failed, running.")] = None,
    queue: Annotated[str | None, typer.Option("--queue", "-q")] = None,
    task: Annotated[str | None, typer.Option("--task")] = None,
    group: Annotated[
        str | None, typer.Option("--group", help="Jobs of this group_key (tenant, customer).")
    ] = None,
    topic: Annotated[
        str | None, typer.Option("--topic", help="Jobs a publish to this topic made.")
    ] = None,
    schedule: Annotated[
        str | None, typer.Option("--schedule", help="Jobs this schedule made.")
    ] = None,
    older_than: Annotated[
        str | None, typer.Option("--older-than", help="A duration with its unit, e.g. 1h.")
    ] = None,
    newer_than: Annotated[
        str | None, typer.Option("--newer-than", help="A duration with its unit, e.g. 10m.")
    ] = None,
    stuck: Annotated[bool, typer.Option("--stuck", help="The stuck_jobs view.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 50,
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    as_json: JsonOption = False,
) -> None:
    """List jobs, newest first, filtered by state, queue, task, group, topic, schedule, age."""
    older = parse_duration(older_than, "--older-than") if older_than is not None else None
    newer = parse_duration(newer_than, "--newer-than") if newer_than is not None else None
    with errors():
        qapp = _app(dsn, schema)
        try:
            rows = (
                qapp.stuck_jobs(limit=limit)
                if stuck
                else qapp.list_jobs(
                    state=state,
                    queue=queue,
                    task=task,
                    group_key=group,
                    topic=topic,
                    schedule=schedule,
                    limit=limit,
                    older_than=older,
                    newer_than=newer,
                )
            )
        except ValueError as exc:  # an unknown state
            fail(str(exc))
    if as_json:
        print_json(rows)
        return
    if not rows:
        out.print("no jobs match")
        return
    out.print(jobs_table(rows, stuck=stuck))


def top(
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.1)] = 1.0,
) -> None:
    """A live dashboard: queues, throughput, workers, stuck jobs, failures. `q` quits."""
    from .top import run_top

    with errors():
        run_top(_app(dsn, schema), console=out, once=once, interval=interval)


def job(
    job_id: Annotated[int, typer.Argument(metavar="ID")],
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Everything about one job, with each attempt's error and traceback."""
    with errors():
        qapp = _app(dsn, schema)
        info = qapp.get_job(job_id)
        keys = qapp.stored_redact_keys()  # every App's keys, not only this process's
        info = dataclasses.replace(info, args=redact(info.args, keys))
        graph = qapp.job_graph(job_id)
    if as_json:
        print_json({**dataclasses.asdict(info), "workflow": graph})
        return
    out.print(job_table(info))
    tree = workflow_tree(info, graph)
    if tree is not None:
        out.print(tree)
    for error in info.errors:
        out.print(
            f"[red]attempt {error.get('attempt')}[/] {error.get('at')}: "
            f"{error.get('type')}: {error.get('message')}",
            highlight=False,
        )
        if error.get("traceback"):
            out.print(Text(str(error["traceback"]).rstrip(), style="dim"))
