"""Commands that change things: migrate, pause, resume, prune, demo."""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn

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
    out,
    print_json,
    report,
    warn,
)


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
