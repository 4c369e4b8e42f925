"""`pgqueue worker`: its options built from the worker's own settings table."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer

from pgqueue._runtime.settings import SETTINGS, WorkerSettings

from ._common import (
    DsnOption,
    SchemaOption,
)
from ._worker_run import worker


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
