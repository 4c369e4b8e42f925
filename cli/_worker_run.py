"""The body of `pgqueue worker`, shared by the typer command (`_worker_cmd`) and by the
worker's own parser (`_worker_fast`). It imports neither typer nor rich until there is an
error to show, so that a worker started through `_worker_fast` never loads them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pgqueue
from pgqueue._db.pools import resolve_dsn

from ._load import _opened, fail_lazily, load_app


@contextmanager
def _errors() -> Iterator[None]:
    """`_output.errors`, imported only when something went wrong."""
    try:
        yield
    except Exception:
        from ._output import errors

        with errors():
            raise


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
        fail_lazily("--log-format is text or json", code=2)
    with _errors():  # an unknown level is one line, like every other bad setting
        pgqueue.configure_logging(log_level, log_format)
    if dsn:
        # Before the import, so that a module doing `app = pgqueue.App()` finds it...
        os.environ["PGQUEUE_DSN"] = dsn
    if schema:
        os.environ["PGQUEUE_SCHEMA"] = schema
    qapp = load_app(app_path)
    _opened.append(qapp)
    if schema and qapp.schema != schema:
        fail_lazily(f"{app_path} uses schema {qapp.schema!r}, not {schema!r}", code=2)
    if dsn:
        # ...and after it, for an App built with a DSN of its own: --dsn wins.
        qapp.dsn = resolve_dsn(dsn)
    with _errors():
        qapp.run_worker(**settings)
