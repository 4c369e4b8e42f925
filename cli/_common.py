"""What every command shares: the --dsn/--schema/--json options, the App a command builds (and
closes at its end), durations, and asking before a bulk change. Loading a user's App is in
`_load`, which `pgqueue worker`'s own parser shares."""

from __future__ import annotations

import re
import sys
from typing import Annotated

import typer

import pgqueue

from ._load import _opened
from ._output import (
    fail,
)

DsnOption = Annotated[
    str | None,
    typer.Option(
        "--dsn",
        envvar="PGQUEUE_DSN",
        help="PostgreSQL URL (default: $PGQUEUE_DSN).",
        show_envvar=True,
    ),
]
SchemaOption = Annotated[
    str | None,
    typer.Option(
        "--schema",
        envvar="PGQUEUE_SCHEMA",
        help="Schema holding pgqueue's tables.",
        show_envvar=True,
    ),
]
JsonOption = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Machine-readable output on stdout; an error is one JSON line on stderr,"
        ' {"error": "...", "code": N}, and the exit code is N.',
    ),
]


def _app(dsn: str | None, schema: str | None) -> pgqueue.App:
    """One place where commands build their App, so --dsn and --schema mean the same in all;
    the App is closed when the command ends."""
    qapp = pgqueue.App(dsn, schema=schema)
    _opened.append(qapp)
    return qapp


YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do it without asking.")]


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, option: str = "a duration") -> float:
    """'90s', '30m', '12h', '7d', '2w' to seconds. A unit is required: `prune --older-than 7`
    once meant 7 seconds, and deleted every finished job."""
    value = text.strip().lower()
    match = _DURATION.fullmatch(value)
    if match:
        return float(match[1]) * _UNIT[match[2]]
    if _NUMBER.fullmatch(value):
        fail(f"{option} {text!r} needs a unit: s, m, h, d or w, e.g. 90s, 10m, 2h, 7d", code=2)
    fail(f"{option} {text!r} is not a duration like 90s, 10m, 2h or 7d", code=2)


def _interactive() -> bool:
    """Whether someone can answer a question: stdin is a terminal."""
    return sys.stdin.isatty()


def _confirm(what: str, question: str, declined: str, as_json: bool) -> None:
    """Ask before a bulk change: `what` it would do, then `question`. With no one to ask (a
    script, a pipe, --json) refuse rather than hang or guess: --yes is the answer there."""
    if as_json or not _interactive():
        fail(f"{what}: pass --yes to confirm")
    try:
        confirmed = typer.confirm(f"{what}. {question}", default=False, err=True)
    except typer.Abort:  # end of input, or Ctrl-C at the prompt
        confirmed = False
    if not confirmed:
        fail(declined)
