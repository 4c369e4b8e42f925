"""`pgqueue worker` without building the whole command line.

Building the typer app costs a worker about 250 ms before its first job (measured with
`python benchmarks/stages.py startup`: every command module imported, rich, and typer
coercing each option through a pydantic adapter, whose import alone is about 100 ms). A
worker is the command that is spawned most, by supervisors and autoscalers, often many at
once on one machine, so this module parses its arguments itself, from the same settings
table the typer command is built from (`pgqueue._runtime.settings.SETTINGS`), and runs the
same `worker` body.

It parses only what it is sure of: a plain spelling of every option the typer command takes.
Anything else (`--help`, an unknown option, a value it cannot read exactly as typer would,
one below its minimum) returns None, and the full command line handles the arguments, so
help, usage errors and their exit codes stay typer's own. tests/test_cli_fast.py checks,
argument vector by argument vector, that what this parser returns is what typer's command
would have passed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import sys
from typing import Any

from pgqueue._runtime.settings import SETTINGS, WorkerSettings

from ._load import close_opened

#: Numbers as typer reads them, nothing looser: Python's int() and float() also take
#: underscores, surrounding spaces, "nan" and "inf", which typer refuses.
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")

#: The options `pgqueue worker` adds to the settings (see _worker_cmd.worker_command): the
#: keyword, and the default when not given (an environment variable's name, or the value).
_TRAILING: dict[str, tuple[str, str, str | None]] = {
    "--dsn": ("dsn", "env", "PGQUEUE_DSN"),
    "--schema": ("schema", "env", "PGQUEUE_SCHEMA"),
    "--log-level": ("log_level", "value", "INFO"),
    "--log-format": ("log_format", "value", "text"),
}


class _Unsure(Exception):
    """Arguments this parser leaves to typer."""


def _flags() -> tuple[dict[str, tuple[str, Any]], dict[str, str]]:
    """Flag -> (setting, value for a bool flag, else None); and the valued settings' kinds."""
    flags: dict[str, tuple[str, Any]] = {}
    valued: dict[str, str] = {}
    for name, setting in SETTINGS.items():
        if setting.flags is None:
            continue
        for spelling in setting.flags:
            if setting.kind == "bool":
                on, _, off = spelling.partition("/")
                flags[on] = (name, True)
                if off:
                    flags[off] = (name, False)
            else:
                flags[spelling] = (name, None)
                valued[name] = setting.kind
    return flags, valued


def _value(name: str, kind: str, text: str) -> Any:
    if kind in ("str", "queues"):
        return text
    if kind == "int" and _INT.fullmatch(text):
        number: float = int(text)
    elif kind == "float" and _FLOAT.fullmatch(text):
        number = float(text)
    else:
        raise _Unsure(name)
    minimum = SETTINGS[name].minimum
    if minimum is not None and number < minimum:
        raise _Unsure(name)  # typer's message names the range
    return number


def parse(argv: list[str]) -> dict[str, Any] | None:
    """The keyword arguments of `worker` for `pgqueue worker ARGV`, or None: leave it to typer."""
    try:
        return _parse(argv)
    except _Unsure:
        return None


def _parse(argv: list[str]) -> dict[str, Any]:
    flags, valued = _flags()
    defaults = {f.name: f.default for f in dataclasses.fields(WorkerSettings)}
    # What typer passes for an option not given: the setting's default, () for a list.
    settings = {
        name: () if s.kind == "queues" else defaults[name]
        for name, s in SETTINGS.items()
        if s.flags is not None
    }
    given: dict[str, Any] = {}
    queues: dict[str, list[str]] = {}
    app_path: str | None = None
    args = list(argv)
    positional_only = False
    while args:
        arg = args.pop(0)
        if positional_only or not arg.startswith("-") or arg == "-":
            if app_path is not None:
                raise _Unsure("a second argument")
            app_path = arg
            continue
        if arg == "--":
            positional_only = True
            continue
        if arg.startswith("--"):
            spelling, eq, attached = arg.partition("=")
            value: str | None = attached if eq else None
        else:
            # A short option, its value attached (-c10) or next; never several flags at once.
            spelling, value = arg[:2], (arg[2:] or None)
        if spelling in _TRAILING:
            key = _TRAILING[spelling][0]
        elif spelling in flags:
            key, flag_value = flags[spelling]
            if flag_value is not None:
                if value is not None:
                    raise _Unsure(arg)  # --burst=1 and the like
                given[key] = flag_value
                continue
        else:
            raise _Unsure(arg)  # --help, -h, a typo: typer's to answer
        if value is None:
            if not args:
                raise _Unsure(arg)  # the option's value is missing
            value = args.pop(0)
        if key in valued and valued[key] == "queues":
            queues.setdefault(key, []).append(value)
        elif key in valued:
            given[key] = _value(key, valued[key], value)
        else:
            given[key] = value
    if app_path is None:
        raise _Unsure("APP")
    out: dict[str, Any] = {"app_path": app_path}
    for key, source, default in _TRAILING.values():
        fallback = os.environ.get(default) if source == "env" and default else default
        out[key] = given.pop(key, fallback)
    return {**out, **settings, **given, **queues}


def run(argv: list[str]) -> bool:
    """Run `pgqueue ARGV` if it is a worker command this module parses; False otherwise."""
    if not argv or argv[0] != "worker":
        return False
    params = parse(argv[1:])
    if params is None:
        return False
    from ._worker_run import worker

    # As cli.main does: the pool's reconnection warnings are noise on a terminal.
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    try:
        worker(**params)
    except KeyboardInterrupt:
        # What typer's standalone mode does with one (click's Abort).
        sys.stderr.write("\nAborted!\n")
        sys.exit(1)
    except Exception as exc:
        code = _exit_code(exc)
        if code is None:
            raise
        sys.exit(code)
    finally:
        close_opened()
    return True


def _exit_code(exc: BaseException) -> int | None:
    """The exit code of `fail`'s typer.Exit; typer is imported only once an error is shown."""
    typer = sys.modules.get("typer")
    if typer is not None and isinstance(exc, typer.Exit):
        return int(exc.exit_code)
    return None
