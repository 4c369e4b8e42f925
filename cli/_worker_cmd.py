"""`pgqueue worker`: its options built from the worker's own settings table."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
from collections.abc import Callable
from typing import Annotated, Any

import typer

import pgqueue
from pgqueue._db.pools import resolve_dsn
from pgqueue._runtime.settings import SETTINGS, WorkerSettings

from ._common import (
    DsnOption,
    SchemaOption,
    _opened,
    load_app,
)
from ._output import (
    errors,
    fail,
)


def _worker_options() -> list[inspect.Parameter]:
    """`pgqueue worker`'s options, built from the worker's own settings table, so a setting is
    defined once (pgqueue._runtime.settings) and the CLI cannot drift from it."""
    defaults = {f.name: f.default for f in dataclasses.fields(WorkerSettings)}
    params = []
    for name, setting in SETTINGS.items():
        if setting.flags is None:
            continue
        kind = _KINDS[setting.kind]
        default = defaults[name]
        option = typer.Option(*setting.flags, help=setting.help, min=setting.minimum)
        hint: Any = kind if default is not None else (kind | None)
        params.append(
            inspect.Parameter(
                name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=default,
                annotation=Annotated[hint, option],
            )
        )
    return params


_KINDS: dict[str, Any] = {
    "int": int,
    "float": float,
    "bool": bool,
    "str": str,
    "queues": list[str],
}


def worker(
    app_path: str,
    dsn: str | None,
    schema: str | None,
    log_level: str,
    log_format: str,
    **settings: Any,
) -> None:
    """Run a worker for the tasks registered on APP."""
    if log_format not in ("text", "json"):
        fail("--log-format is text or json", code=2)
    with errors():  # an unknown level is one line, like every other bad setting
        pgqueue.configure_logging(log_level, log_format)
    if dsn:
        # Before the import, so that a module doing `app = pgqueue.App()` finds it...
        os.environ["PGQUEUE_DSN"] = dsn
    if schema:
        os.environ["PGQUEUE_SCHEMA"] = schema
    qapp = load_app(app_path)
    _opened.append(qapp)
    if schema and qapp.schema != schema:
        fail(f"{app_path} uses schema {qapp.schema!r}, not {schema!r}", code=2)
    if dsn:
        # ...and after it, for an App built with a DSN of its own: --dsn wins.
        qapp.dsn = resolve_dsn(dsn)
    with errors():
        qapp.run_worker(**settings)


def worker_command() -> Callable[..., None]:
    """`worker` with its signature built from the settings table, for `app.command`."""
    leading = [
        inspect.Parameter(
            "app_path",
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            annotation=Annotated[str, typer.Argument(metavar="APP", help="package.module:app")],
        )
    ]
    trailing = [
        inspect.Parameter(
            "dsn", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=DsnOption
        ),
        inspect.Parameter(
            "schema", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=SchemaOption
        ),
        inspect.Parameter(
            "log_level",
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            default="INFO",
            annotation=Annotated[str, typer.Option("--log-level")],
        ),
        inspect.Parameter(
            "log_format",
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            default="text",
            annotation=Annotated[str, typer.Option("--log-format", help="text or json")],
        ),
    ]
    params = [*leading, *_worker_options(), *trailing]
    command = functools.wraps(worker)(lambda **kw: worker(**kw))
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command
