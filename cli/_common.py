"""What every command shares: the --dsn/--schema/--json options, the App a command builds (and
closes at its end), durations, loading a user's App, and asking before a bulk change."""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
import traceback
from typing import Annotated

import typer

import pgqueue

from ._output import (
    fail,
)

#: Apps the running command built (`_app`, `worker`), closed when it ends however it ends:
#: an App dropped unclosed leaves its pool to a garbage collection on any thread, its pool's
#: own included ("Exception ignored in ConnectionPool.__del__: cannot join current thread").
_opened: list[pgqueue.App] = []


def _close_opened() -> None:
    while _opened:
        qapp = _opened.pop()
        # A pool that fails to close must not replace the command's own result or error.
        with contextlib.suppress(Exception):
            qapp.close()


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


def load_app(path: str) -> pgqueue.App:
    """Import `package.module:attribute` and check that it is a pgqueue App."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        fail(f"APP must look like package.module:app, not {path!r}", code=2)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure of user code is one line, exit 2
        fail(f"cannot import {module_name!r}: {_import_error(exc)}", code=2)
    obj = getattr(module, attr, None)
    if not isinstance(obj, pgqueue.App):
        fail(f"{path!r} is not a pgqueue.App (found {type(obj).__name__})", code=2)
    return obj


_IMPORTLIB_DIR = os.path.dirname(importlib.__file__ or "")


def _import_error(exc: BaseException) -> str:
    """`NameError: name 'x' is not defined (at myapp/tasks.py:12)`: the error, and where in
    the user's code it happened (for a SyntaxError, the file and line it names)."""
    if isinstance(exc, SyntaxError) and exc.filename and exc.lineno:
        return f"{type(exc).__name__}: {exc.msg} (at {_where(exc.filename, exc.lineno)})"
    text = f"{type(exc).__name__}: {exc}"
    # The frames after load_app's own, without the import machinery's (importlib's and
    # <frozen importlib...>): the last one is where the error was raised in the user's code.
    # None: the module itself was not found.
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)[1:]
        if not f.filename.startswith("<frozen ") and os.path.dirname(f.filename) != _IMPORTLIB_DIR
    ]
    if frames and frames[-1].lineno is not None:
        text += f" (at {_where(frames[-1].filename, frames[-1].lineno)})"
    return text


def _where(filename: str, lineno: int) -> str:
    """`myapp/tasks.py:12`: relative to the current directory when the file is under it."""
    with contextlib.suppress(ValueError):  # another drive, on Windows
        relative = os.path.relpath(filename)
        if not relative.startswith(os.pardir):
            filename = relative
    return f"{filename}:{lineno}"


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
