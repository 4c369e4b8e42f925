"""Commands that change things: migrate, pause, resume, prune, demo."""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn

import pgqueue

from ._common import (
    DsnOption,
    JsonOption,
    SchemaOption,
    _app,
    _confirm,
    parse_duration,
)
from ._output import (
    err,
    errors,
    fail,
    out,
    print_json,
    report,
    warn,
)
from ._tables import limits_table


def migrate(
    dsn: DsnOption = None, schema: SchemaOption = None, as_json: JsonOption = False
) -> None:
    """Create or upgrade pgqueue's schema (safe to run concurrently and repeatedly)."""
    with errors():
        qapp = _app(dsn, schema)
        applied = qapp.migrate()
    message = (
        f"applied migrations {', '.join(map(str, applied))} to schema {qapp.schema!r}"
        if applied
        else f"schema {qapp.schema!r} is up to date"
    )
    report(as_json, message, {"schema": qapp.schema, "applied": applied})


def pause(
    queue: Annotated[str, typer.Argument(metavar="QUEUE")],
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Stop workers from claiming this queue's jobs (running ones finish)."""
    _set_paused(queue, True, dsn, schema, as_json)


def resume(
    queue: Annotated[str, typer.Argument(metavar="QUEUE")],
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Let workers claim this queue's jobs again."""
    _set_paused(queue, False, dsn, schema, as_json)


def _set_paused(
    queue: str, paused: bool, dsn: str | None, schema: str | None, as_json: bool
) -> None:
    with errors():
        qapp = _app(dsn, schema)
        known = [s.queue for s in qapp.queue_stats()]
        if paused:
            qapp.pause(queue)
        else:
            qapp.resume(queue)
    word = "paused" if paused else "resumed"
    data: dict[str, Any] = {"queue": queue, "paused": paused}
    warning = None
    if queue not in known:
        # Still done: a queue may be paused before its first job. But a typo shows.
        warning = (
            f"queue {queue!r} has no live or recent jobs and no settings"
            + ("; paused it anyway" if paused else "; nothing was paused")
            + f" (known queues: {_names(known)})"
        )
        data["warning"] = warning
    report(as_json, f"queue {queue} {word}", data)
    if warning and not as_json:
        warn(warning)


def _names(names: list[str], most: int = 20) -> str:
    if not names:
        return "none"
    shown = ", ".join(sorted(names)[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


#: `prune` asks first (or wants --yes) when it would delete more finished jobs than this.
PRUNE_CONFIRM_ABOVE = 1000


def _confirm_prune(count: int, as_json: bool) -> None:
    _confirm(
        f"this would delete {count} finished job(s), more than {PRUNE_CONFIRM_ABOVE}",
        "Delete them?",
        "prune not confirmed: nothing deleted",
        as_json,
    )


def prune(
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            help="Finished longer ago than this, with its unit: 90s, 10m, 2h, 7d."
            " Default: each state's retention.",
        ),
    ] = None,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes", "-y", help=f"Delete more than {PRUNE_CONFIRM_ABOVE} jobs without asking."
        ),
    ] = False,
    batch: Annotated[int, typer.Option("--batch", min=1)] = 1000,
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete finished jobs in small batches: never a live job, never one long lock.

    Above 1000 jobs it asks first; with no terminal to ask on, or --json, it needs --yes.
    """
    seconds = parse_duration(older_than, "--older-than") if older_than is not None else None
    with errors():
        qapp = _app(dsn, schema)
        if not yes:
            count = qapp.count_prunable(seconds)
            if count > PRUNE_CONFIRM_ABOVE:
                _confirm_prune(count, as_json)
        if as_json:
            deleted = qapp.prune(seconds, batch=batch)
        else:
            columns = (SpinnerColumn(), TextColumn("pruning: {task.completed} deleted"))
            with Progress(*columns, console=err, transient=True) as bar:
                progress_task = bar.add_task("prune", total=None)
                deleted = qapp.prune(
                    seconds,
                    batch=batch,
                    progress=lambda n: bar.update(progress_task, completed=n),
                )
    if as_json:
        print_json({"deleted": deleted})
    else:
        out.print(f"deleted {deleted} finished job(s)")


def demo(
    dsn: Annotated[
        str | None,
        typer.Option("--dsn", help="Use this database instead of an embedded one."),
    ] = None,
    data_dir: Annotated[
        str, typer.Option("--data-dir", help="Where the embedded PostgreSQL keeps its files.")
    ] = ".pgqueue-demo",
    jobs: Annotated[int, typer.Option("--jobs", min=1, help="How many quick jobs.")] = 200,
    keep_running: Annotated[
        bool,
        typer.Option(
            "--keep-running",
            help="After the demo, keep its worker (and the embedded PostgreSQL) running until"
            " Ctrl-C or SIGTERM, to look around with status and top.",
        ),
    ] = False,
) -> None:
    """See jobs flow: example jobs and a live worker, in a schema of its own (pgqueue_demo)
    on an embedded PostgreSQL, or on --dsn / $PGQUEUE_DSN: never your queues."""
    from .demo import run_demo

    with errors():
        run_demo(
            dsn=dsn or os.environ.get("PGQUEUE_DSN"),
            data_dir=data_dir,
            quick_jobs=jobs,
            console=out,
            keep_running=keep_running,
        )


#: What `--clear` names: a setting of `pgqueue queue` (the option without its dashes).
_CLEARABLE = {
    "concurrency": "concurrency",
    "rate": "rate",
    "group-concurrency": "group_concurrency",
    "group_concurrency": "group_concurrency",
    "group-rate": "group_rate",
    "group_rate": "group_rate",
    "fair": "fair",
    "max-depth": "max_depth",
    "max_depth": "max_depth",
}


def queue(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    concurrency: Annotated[
        int | None,
        typer.Option("--concurrency", help="At most N jobs of the queue running at once."),
    ] = None,
    rate: Annotated[
        str | None,
        typer.Option(
            "--rate", help="At most N starts per period: 20/s, 100/m, 5/h, 1000/d, 30/10s."
        ),
    ] = None,
    group_concurrency: Annotated[
        int | None, typer.Option("--group-concurrency", help="At most N running per group_key.")
    ] = None,
    group_rate: Annotated[
        str | None, typer.Option("--group-rate", help="At most N starts per period per group.")
    ] = None,
    fair: Annotated[
        bool | None,
        typer.Option("--fair/--no-fair", help="Round-robin across group keys in a priority."),
    ] = None,
    max_depth: Annotated[
        int | None,
        typer.Option("--max-depth", help="Enqueue raises QueueFull past N waiting jobs."),
    ] = None,
    clear: Annotated[
        list[str] | None,
        typer.Option(
            "--clear",
            help="Remove a setting (repeatable): concurrency, rate, group-concurrency,"
            " group-rate, fair, max-depth.",
        ),
    ] = None,
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a queue's limits with their use now, or set them (DESIGN.md section 8).

    A setting not given stays as it is; --clear removes one. Every worker applies a change
    within a second, without a restart."""
    changes: dict[str, Any] = {}
    for key, value in (
        ("concurrency", concurrency),
        ("rate", rate),
        ("group_concurrency", group_concurrency),
        ("group_rate", group_rate),
        ("fair", fair),
        ("max_depth", max_depth),
    ):
        if value is not None:
            changes[key] = value
    for item in clear or []:
        cleared = _CLEARABLE.get(item.strip().lstrip("-"))
        if cleared is None:
            fail(
                f"--clear takes a setting name, not {item!r}: concurrency, rate,"
                " group-concurrency, group-rate, fair, max-depth",
                code=2,
            )
        if cleared in changes:
            fail(f"{item} is both set and cleared", code=2)
        changes[cleared] = None
    with errors():
        qapp = _app(dsn, schema)
        try:
            settings = (
                qapp.configure_queue(name, **changes) if changes else qapp.queue_settings(name)
            )
        except pgqueue.ValidationError as exc:
            fail(str(exc), code=2)
        limits = qapp.queue_limits(name)
    if as_json:
        print_json({"settings": settings, "limits": limits, "changed": sorted(changes)})
        return
    shown = {
        "concurrency": settings.concurrency,
        "rate": settings.rate,
        "group concurrency": settings.group_concurrency,
        "group rate": settings.group_rate,
        "fair": settings.fair,
        "max depth": settings.max_depth,
        "paused": settings.paused,
    }
    verb = "set" if changes else "settings of"
    out.print(f"[bold]{verb} queue {settings.queue}[/]", highlight=False)
    for key, value in shown.items():
        out.print(f"  {key:<18} {'-' if value is None else value}", highlight=False)
    if limits:
        out.print(limits_table(limits, title="in use now"))
