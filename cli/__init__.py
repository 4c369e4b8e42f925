"""The `pgqueue` command line: thin typer commands over the public API.

`pgqueue worker` is parsed by `_worker_fast` when it can be, without building the typer app
(see there why); everything else, and any worker command line it is not sure of, goes to the
typer app in `main`, imported on first use."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any


def main() -> None:
    """The `pgqueue` entry point."""
    from ._worker_fast import run

    if run(sys.argv[1:]):
        return
    _commands().main()


def _commands() -> ModuleType:
    """The typer app's module. Importing the submodule `main` binds this package's `main`
    to it; the entry point function is put back."""
    module = importlib.import_module(f"{__name__}.main")
    globals()["main"] = _entry
    return module


_entry = main


def __getattr__(name: str) -> Any:
    if name == "app":
        return _commands().app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["app", "main"]
