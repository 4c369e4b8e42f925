"""Commands for topics and schedules: `topics`, `schedules`, `schedule pause|resume NAME`."""

from __future__ import annotations

from typing import Annotated

import typer

from pgqueue.errors import ValidationError

from ._common import DsnOption, JsonOption, SchemaOption, _app
from ._output import errors, fail, out, print_json, report
from ._tables import schedules_table, subscriptions_table


def topics(dsn: DsnOption = None, schema: SchemaOption = None, as_json: JsonOption = False) -> None:
    """Topic subscriptions: each pattern, the task and queue it feeds, and how many jobs
    publishes made for it in the last hour."""
    with errors():
        rows = _app(dsn, schema).subscriptions()
    if as_json:
        print_json({"subscriptions": rows})
        return
    if not rows:
        out.print("no subscriptions yet: app.subscribe(...) or @app.task(topics=[...])")
        return
    out.print(subscriptions_table(rows))


def schedules(
    dsn: DsnOption = None, schema: SchemaOption = None, as_json: JsonOption = False
) -> None:
    """Schedules: cron, time zone, next run, last slot and job, and whether each fires."""
    with errors():
        rows = _app(dsn, schema).schedules()
    if as_json:
        print_json({"schedules": rows})
        return
    if not rows:
        out.print("no schedules yet: declare one with app.periodic(...) and start a worker")
        return
    out.print(schedules_table(rows))


schedule = typer.Typer(name="schedule", help="Pause or resume one schedule.", no_args_is_help=True)

NameArgument = Annotated[str, typer.Argument(metavar="NAME", help="The schedule's name.")]


@schedule.command("pause")
def pause_schedule(
    name: NameArgument,
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Stop a schedule from firing, in every worker, until it is resumed."""
    _set_paused(name, True, dsn, schema, as_json)


@schedule.command("resume")
def resume_schedule(
    name: NameArgument,
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Fire a paused schedule again from its next slot (slots missed while paused are
    skipped)."""
    _set_paused(name, False, dsn, schema, as_json)


def _set_paused(
    name: str, paused: bool, dsn: str | None, schema: str | None, as_json: bool
) -> None:
    with errors():
        qapp = _app(dsn, schema)
        try:
            if paused:
                qapp.pause_schedule(name)
            else:
                qapp.resume_schedule(name)
        except ValidationError as exc:
            fail(str(exc), code=2)
    word = "paused" if paused else "resumed"
    report(as_json, f"schedule {name} {word}", {"schedule": name, "paused": paused})
