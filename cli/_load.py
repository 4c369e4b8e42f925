"""Loading a user's App and closing the Apps a command opened: shared by the typer commands
and by `pgqueue worker`'s own parser (`_worker_fast`), so nothing here imports typer or rich
until an error has to be shown."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import traceback
from typing import NoReturn

import pgqueue

#: Apps the running command built (`_app`, `worker`), closed when it ends however it ends:
#: an App dropped unclosed leaves its pool to a garbage collection on any thread, its pool's
#: own included ("Exception ignored in ConnectionPool.__del__: cannot join current thread").
_opened: list[pgqueue.App] = []


def close_opened() -> None:
    while _opened:
        qapp = _opened.pop()
        # A pool that fails to close must not replace the command's own result or error.
        with contextlib.suppress(Exception):
            qapp.close()


def fail_lazily(message: str, code: int = 1) -> NoReturn:
    """`_output.fail`, whose typer and rich are imported only once there is an error."""
    from ._output import fail

    fail(message, code=code)


def load_app(path: str) -> pgqueue.App:
    """Import `package.module:attribute` and check that it is a pgqueue App."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        fail_lazily(f"APP must look like package.module:app, not {path!r}", code=2)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure of user code is one line, exit 2
        fail_lazily(f"cannot import {module_name!r}: {_import_error(exc)}", code=2)
    obj = getattr(module, attr, None)
    if not isinstance(obj, pgqueue.App):
        fail_lazily(f"{path!r} is not a pgqueue.App (found {type(obj).__name__})", code=2)
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
