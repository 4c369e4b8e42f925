"""`pgqueue` commands. Each is a thin shell over the public API with rich output and --json.

The typer app is here; the commands live in the modules it imports, by what they do."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

import pgqueue

from ._inspect import job, jobs, status, tasks, top
from ._load import close_opened
from ._output import (
    fail,
    json_errors,
    json_errors_enabled,
)
from ._retry_cancel import cancel, retry
from ._schedules import schedule, schedules, topics
from ._steer import demo, migrate, pause, prune, queue, resume
from ._web_cmd import web
from ._worker_cmd import worker_command


class _Commands(TyperGroup):
    """Every run of `pgqueue`: errors as JSON when --json is among its arguments (so that a
    usage error is JSON too), and the command's Apps closed at its end."""

    def main(self, args: Sequence[str] | None = None, *rest: Any, **kwargs: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        options = argv[: argv.index("--")] if "--" in argv else argv
        json_errors("--json" in options)
        try:
            return super().main(args, *rest, **kwargs)
        finally:
            close_opened()
            json_errors(False)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            # A usage error (click's, raised while parsing the command's arguments): typer
            # prints it as a panel, which a script reading --json output cannot parse.
            message, code = getattr(exc, "format_message", None), getattr(exc, "exit_code", None)
            if json_errors_enabled() and callable(message) and isinstance(code, int):
                fail(str(message()), code=code)
            raise


app = typer.Typer(
    name="pgqueue",
    cls=_Commands,
    help="A PostgreSQL-native job queue: migrate, run workers, and see what is going on.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"pgqueue {pgqueue.__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    pass


# Registered here, in this order, which is the order `pgqueue --help` lists them in.
app.command()(migrate)
app.command(name="worker")(worker_command())
app.command()(status)
app.command()(tasks)
app.command()(jobs)
app.command()(pause)
app.command()(resume)
app.command()(queue)
app.command()(prune)
app.command()(top)
app.command()(job)
app.command()(retry)
app.command()(cancel)
app.command()(topics)
app.command()(schedules)
app.add_typer(schedule)
app.command()(demo)
app.command()(web)


def main() -> None:
    # The pool's background reconnection warnings are noise on a terminal: a command reports
    # a database it cannot reach in its own one-line error.
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    app()
