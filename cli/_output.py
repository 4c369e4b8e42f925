"""How every command speaks: one place for the consoles, errors, JSON and cell text.

Kept apart from the commands so that `top` and `demo` can report the same way without
importing `main` (which imports them).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from enum import Enum
from typing import Any, NoReturn

import typer
from rich.console import Console, ConsoleDimensions
from rich.markup import escape

from pgqueue._db.errors import ConnectionFailed, DatabaseError
from pgqueue.errors import PgQueueError

#: How wide stdout is when it is not a terminal (a pipe, a file, a test's runner): wide enough
#: that a table keeps every column and every cell whole, for grep and for the record.
PIPED_WIDTH = 10_000


class _Stdout(Console):
    """stdout: the terminal's width at a terminal (a narrow one folds cells, see _tables), and
    PIPED_WIDTH otherwise, where rich would assume 80 columns (or take stderr's terminal
    width) and drop or ellipsize the columns that do not fit. $COLUMNS still wins."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self._width is None and not self.is_terminal and "COLUMNS" not in os.environ:
            return ConsoleDimensions(PIPED_WIDTH, size.height)
        return size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


#: Results go to stdout and problems to stderr, so that `--json` output stays parseable.
out: Console = _Stdout()
err = Console(stderr=True)

#: Set for each run from its arguments (`cli.main`): with --json, an error is printed as one
#: JSON object on stderr, `{"error": "...", "code": N}`, with the same exit code N.
_json_errors = False


def json_errors(enabled: bool) -> None:
    """Print this run's errors as JSON (`--json`) or as one red line (the default)."""
    global _json_errors
    _json_errors = enabled


def json_errors_enabled() -> bool:
    return _json_errors


_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]+@|(password=)\S+")


def redact_dsn(text: str) -> str:
    """Never print a DSN's password, whatever error message carried it."""
    return _PASSWORD.sub(lambda m: (m[1] or m[2]) + "***" + ("@" if m[1] else ""), text)


def fail(message: str, code: int = 1) -> NoReturn:
    """End the command with one red line instead of a traceback; code 2 means bad usage.

    With --json the line is a JSON object on stderr instead: `{"error": ..., "code": N}`.
    """
    message = redact_dsn(message)
    if _json_errors:
        sys.stderr.write(json.dumps({"error": message, "code": code}) + "\n")
        sys.stderr.flush()
    else:
        err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def warn(message: str) -> None:
    """Something worth a look that is no error: one yellow line on stderr."""
    line = f"[bold yellow]warning:[/] {escape(redact_dsn(message))}"
    err.print(line, highlight=False, soft_wrap=True)


@contextmanager
def errors() -> Iterator[None]:
    """Turn expected failures into one clear line and a non-zero exit, never a traceback."""
    try:
        yield
    except PgQueueError as exc:
        fail(str(exc))
    except ConnectionFailed as exc:
        fail(f"cannot reach the database: {str(exc).strip().splitlines()[0]}")
    except DatabaseError as exc:
        fail(f"database error: {str(exc).strip().splitlines()[0]}")


def jsonable(value: Any) -> Any:
    """Plain JSON types from the API's dataclasses, datetimes and enums, for scripts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    return value


def print_json(value: Any) -> None:
    """Raw stdout, not rich: rich would wrap and colour what a script must parse."""
    sys.stdout.write(json.dumps(jsonable(value), indent=2, default=str) + "\n")


def report(as_json: bool, message: str, data: dict[str, Any]) -> None:
    """A command's result: a sentence for people, an object for scripts."""
    if as_json:
        print_json(data)
    else:
        out.print(message, highlight=False)


def cell(value: Any) -> str:
    """A table cell short enough for a terminal: no microseconds, no fractional seconds."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.0f}"
    return str(value)
