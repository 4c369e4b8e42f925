"""`pgqueue` commands. Each is a thin shell over the public API with rich output and --json."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import inspect
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.text import Text
from typer.core import TyperGroup

import pgqueue
from pgqueue._logging import redact
from pgqueue._runtime.settings import SETTINGS, WorkerSettings

from ._output import (
    err,
    errors,
    fail,
    json_errors,
    json_errors_enabled,
    out,
    print_json,
    report,
    warn,
)
from ._tables import job_table, jobs_table, queue_table, status_warnings, tasks_table

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
            _close_opened()
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


@app.command()
def migrate(
    dsn: DsnOption = None, schema: SchemaOption = None, as_json: JsonOption = False
) -> None:
    """Create or upgrade pgqueue's schema (safe to run concurrently and repeatedly)."""
    with errors():
        qapp = _app(dsn, schema)
        applied = qapp.migrate()
    message = (
        f"applied migrations {', '.join(map(str, applied))} to schema {qapp.schema!r}"
        if applied
        else f"schema {qapp.schema!r} is up to date"
    )
    report(as_json, message, {"schema": qapp.schema, "applied": applied})


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
        qapp.dsn = pgqueue.App(dsn, schema=qapp.schema).dsn
    settings["queues"] = settings.get("queues") or None
    with errors():
        qapp.run_worker(**settings)


def _register_worker() -> None:
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
    app.command(name="worker")(command)


_register_worker()


#: How many stuck jobs `status` lists to break its warning down (the count is exact).
STUCK_SAMPLE = 1000


@app.command()
def status(dsn: DsnOption = None, schema: SchemaOption = None, as_json: JsonOption = False) -> None:
    """Queues at a glance: counts per state, lag, throughput, failures."""
    with errors():
        qapp = _app(dsn, schema)
        stats = qapp.queue_stats()
        stuck = qapp.stuck_jobs(limit=STUCK_SAMPLE)
        stuck_count = qapp.count_stuck()
    if as_json:
        print_json({"queues": stats, "stuck_jobs": stuck, "stuck_count": stuck_count})
        return
    if not stats:
        out.print("no queues yet: nothing has been enqueued")
        return
    out.print(queue_table(stats))
    for line in status_warnings(stats, stuck, stuck_count):
        out.print(f"[bold yellow]warning:[/] {line}", highlight=False)


@app.command()
def tasks(dsn: DsnOption = None, schema: SchemaOption = None, as_json: JsonOption = False) -> None:
    """The task catalog: every task a worker or App registered, with the defaults that SQL
    enqueue and enqueue by name apply to it."""
    with errors():
        catalog = _app(dsn, schema).tasks_catalog()
    if as_json:
        print_json({"tasks": catalog})
        return
    if not catalog:
        out.print("no tasks registered yet: start a worker (or enqueue from an App)")
        return
    out.print(tasks_table(catalog))


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


@app.command()
def jobs(
    state: Annotated[str | None, typer.Option("--state", help="e.g. failed, running.")] = None,
    queue: Annotated[str | None, typer.Option("--queue", "-q")] = None,
    task: Annotated[str | None, typer.Option("--task")] = None,
    older_than: Annotated[
        str | None, typer.Option("--older-than", help="A duration with its unit, e.g. 1h.")
    ] = None,
    newer_than: Annotated[
        str | None, typer.Option("--newer-than", help="A duration with its unit, e.g. 10m.")
    ] = None,
    stuck: Annotated[bool, typer.Option("--stuck", help="The stuck_jobs view.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 50,
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    as_json: JsonOption = False,
) -> None:
    """List jobs, newest first, filtered by state, queue, task and age."""
    older = parse_duration(older_than, "--older-than") if older_than is not None else None
    newer = parse_duration(newer_than, "--newer-than") if newer_than is not None else None
    with errors():
        qapp = _app(dsn, schema)
        try:
            rows = (
                qapp.stuck_jobs(limit=limit)
                if stuck
                else qapp.list_jobs(
                    state=state,
                    queue=queue,
                    task=task,
                    limit=limit,
                    older_than=older,
                    newer_than=newer,
                )
            )
        except ValueError as exc:  # an unknown state
            fail(str(exc))
    if as_json:
        print_json(rows)
        return
    if not rows:
        out.print("no jobs match")
        return
    out.print(jobs_table(rows, stuck=stuck))


@app.command()
def pause(
    queue: Annotated[str, typer.Argument(metavar="QUEUE")],
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Stop workers from claiming this queue's jobs (running ones finish)."""
    _set_paused(queue, True, dsn, schema, as_json)


@app.command()
def resume(
    queue: Annotated[str, typer.Argument(metavar="QUEUE")],
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Let workers claim this queue's jobs again."""
    _set_paused(queue, False, dsn, schema, as_json)


def _set_paused(
    queue: str, paused: bool, dsn: str | None, schema: str | None, as_json: bool
) -> None:
    with errors():
        qapp = _app(dsn, schema)
        known = [s.queue for s in qapp.queue_stats()]
        if paused:
            qapp.pause(queue)
        else:
            qapp.resume(queue)
    word = "paused" if paused else "resumed"
    data: dict[str, Any] = {"queue": queue, "paused": paused}
    warning = None
    if queue not in known:
        # Still done: a queue may be paused before its first job. But a typo shows.
        warning = (
            f"queue {queue!r} has no live or recent jobs and no settings"
            + ("; paused it anyway" if paused else "; nothing was paused")
            + f" (known queues: {_names(known)})"
        )
        data["warning"] = warning
    report(as_json, f"queue {queue} {word}", data)
    if warning and not as_json:
        warn(warning)


def _names(names: list[str], most: int = 20) -> str:
    if not names:
        return "none"
    shown = ", ".join(sorted(names)[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


#: `prune` asks first (or wants --yes) when it would delete more finished jobs than this.
PRUNE_CONFIRM_ABOVE = 1000


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


def _confirm_prune(count: int, as_json: bool) -> None:
    _confirm(
        f"this would delete {count} finished job(s), more than {PRUNE_CONFIRM_ABOVE}",
        "Delete them?",
        "prune not confirmed: nothing deleted",
        as_json,
    )


@app.command()
def prune(
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            help="Finished longer ago than this, with its unit: 90s, 10m, 2h, 7d."
            " Default: each state's retention.",
        ),
    ] = None,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes", "-y", help=f"Delete more than {PRUNE_CONFIRM_ABOVE} jobs without asking."
        ),
    ] = False,
    batch: Annotated[int, typer.Option("--batch", min=1)] = 1000,
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete finished jobs in small batches: never a live job, never one long lock.

    Above 1000 jobs it asks first; with no terminal to ask on, or --json, it needs --yes.
    """
    seconds = parse_duration(older_than, "--older-than") if older_than is not None else None
    with errors():
        qapp = _app(dsn, schema)
        if not yes:
            count = qapp.count_prunable(seconds)
            if count > PRUNE_CONFIRM_ABOVE:
                _confirm_prune(count, as_json)
        if as_json:
            deleted = qapp.prune(seconds, batch=batch)
        else:
            columns = (SpinnerColumn(), TextColumn("pruning: {task.completed} deleted"))
            with Progress(*columns, console=err, transient=True) as bar:
                progress_task = bar.add_task("prune", total=None)
                deleted = qapp.prune(
                    seconds,
                    batch=batch,
                    progress=lambda n: bar.update(progress_task, completed=n),
                )
    if as_json:
        print_json({"deleted": deleted})
    else:
        out.print(f"deleted {deleted} finished job(s)")


@app.command()
def top(
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.1)] = 1.0,
) -> None:
    """A live dashboard: queues, throughput, workers, stuck jobs, failures. `q` quits."""
    from .top import run_top

    with errors():
        run_top(_app(dsn, schema), console=out, once=once, interval=interval)


@app.command()
def job(
    job_id: Annotated[int, typer.Argument(metavar="ID")],
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Everything about one job, with each attempt's error and traceback."""
    with errors():
        qapp = _app(dsn, schema)
        info = qapp.get_job(job_id)
        keys = qapp.stored_redact_keys()  # every App's keys, not only this process's
        info = dataclasses.replace(info, args=redact(info.args, keys))
    if as_json:
        print_json(info)
        return
    out.print(job_table(info))
    for error in info.errors:
        out.print(
            f"[red]attempt {error.get('attempt')}[/] {error.get('at')}: "
            f"{error.get('type')}: {error.get('message')}",
            highlight=False,
        )
        if error.get("traceback"):
            out.print(Text(str(error["traceback"]).rstrip(), style="dim"))


@dataclasses.dataclass(frozen=True)
class _Done:
    """What a command did to one of the job ids it was given."""

    job: int | str
    result: str  # a word for scripts: cancelled, cancel_requested, not_found, ...
    text: str  # the same for people
    ok: bool
    state: str | None = None  # the job's state, when it is why nothing was done

    def line(self) -> str:
        return f"job {self.job}: {self.text}"

    def data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.job, "result": self.result}
        if self.state is not None:
            data["state"] = self.state
        return data


_FINISHED = ("completed", "failed", "cancelled")


def _job_id(raw: str) -> int | None:
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if 0 < value < 2**63 else None


def _per_id(
    job_ids: list[str],
    one: Callable[[pgqueue.App, int], _Done],
    *,
    verb: str,
    dsn: str | None,
    schema: str | None,
    as_json: bool,
) -> None:
    """Apply `one(app, id)` to every id and report each result as it comes, so that one bad
    id neither hides what was done to the others nor stops them. Exit 1 if any failed."""
    done: list[_Done] = []
    try:
        with errors():
            qapp = _app(dsn, schema)
            for raw in job_ids:
                job_id = _job_id(raw)
                result = (
                    _Done(raw, "invalid_id", f"not {verb}: invalid id", False)
                    if job_id is None
                    else one(qapp, job_id)
                )
                done.append(result)
                if not as_json:
                    out.print(result.line(), highlight=False, style=None if result.ok else "red")
    finally:
        # Even when the database fails half-way: what was done is reported.
        if as_json and done:
            counts: dict[str, int] = {}
            for d in done:
                counts[d.result] = counts.get(d.result, 0) + 1
            print_json({"jobs": [d.data() for d in done], **counts})
    failed = [d for d in done if not d.ok]
    if failed:
        fail(f"{len(failed)} of {len(done)} job(s) not {verb}")


def _left_alone(qapp: pgqueue.App, job_id: int, verb: str) -> _Done:
    """Why a job was left alone: it does not exist, or its state did not allow it."""
    try:
        state = qapp.get_job(job_id).state.value
    except pgqueue.JobNotFound:
        return _Done(job_id, "not_found", f"not {verb}: not found", False)
    if state in _FINISHED:
        return _Done(job_id, "already_finished", f"not {verb}: already {state}", False, state)
    return _Done(job_id, f"not_{verb}", f"not {verb}: it is {state}", False, state)


def _cancel_one(qapp: pgqueue.App, job_id: int) -> _Done:
    if not qapp.cancel(job_id):
        return _left_alone(qapp, job_id, "cancelled")
    state = qapp.get_job(job_id).state.value
    if state == "running":
        return _Done(
            job_id,
            "cancel_requested",
            "cancel requested: its worker stops it at its next heartbeat",
            True,
        )
    if state == "cancelled":
        return _Done(job_id, "cancelled", "cancelled", True)
    # It was running, and finished before the request could stop it.
    return _Done(
        job_id, "already_finished", f"not cancelled: it finished first, {state}", False, state
    )


def _retry_one(qapp: pgqueue.App, job_id: int) -> _Done:
    try:
        if qapp.retry(job_id):
            return _Done(job_id, "retried", "retrying", True)
    except pgqueue.ValidationError as exc:  # another unfinished job holds its unique_key
        return _Done(job_id, "conflict", f"not retried: {exc}", False)
    return _left_alone(qapp, job_id, "retried")


YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do it without asking.")]


def _filters(queue: str | None, task: str | None = None, state: str | None = None) -> str:
    """` (queue emails, state available)`: what a bulk command was limited to."""
    parts = [f"{k} {v}" for k, v in (("queue", queue), ("task", task), ("state", state)) if v]
    return f" ({', '.join(parts)})" if parts else ""


#: `retry --failed` counts the failed jobs it would retry up to this many ("over N" beyond).
FAILED_COUNT_CAP = 100_000


def _count_failed(qapp: pgqueue.App, queue: str | None) -> int:
    """How many failed jobs `retry_failed(queue)` would retry, up to FAILED_COUNT_CAP + 1.

    Not from `queue_stats()`: its `failed` counts the last hour only, and an outage that
    failed jobs for longer is what `retry --failed --fresh` is for."""
    try:
        rows = qapp.list_jobs(state="failed", queue=queue, limit=FAILED_COUNT_CAP + 1)
    except pgqueue.ValidationError as exc:  # a queue name that cannot be one
        fail(str(exc), code=2)
    return len(rows)


def _retry_failed(
    queue: str | None, fresh: bool, yes: bool, dsn: str | None, schema: str | None, as_json: bool
) -> None:
    where = _filters(queue)
    with errors():
        qapp = _app(dsn, schema)
        count = _count_failed(qapp, queue)
        if count == 0:
            report(as_json, f"no failed jobs{where}: nothing retried", {"retried": 0})
            return
        if not yes:
            shown = f"over {FAILED_COUNT_CAP}" if count > FAILED_COUNT_CAP else str(count)
            budget = " with a full attempt budget" if fresh else ", one more attempt each"
            _confirm(
                f"this would retry {shown} failed job(s){where}{budget}",
                "Retry them?",
                "retry not confirmed: nothing retried",
                as_json,
            )
        retried = qapp.retry_failed(queue, fresh=fresh)
    report(as_json, f"retrying {retried} failed job(s){where}", {"retried": retried})


@app.command()
def retry(
    job_ids: Annotated[list[str] | None, typer.Argument(metavar="ID")] = None,
    failed: Annotated[bool, typer.Option("--failed", help="Every failed job.")] = False,
    queue: Annotated[
        str | None, typer.Option("--queue", "-q", help="With --failed: only this queue's.")
    ] = None,
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh",
            help="With --failed: a full attempt budget again (after an outage),"
            " instead of one more attempt.",
        ),
    ] = False,
    yes: YesOption = False,
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run failed or cancelled jobs again: by id, or every failed one (--failed).

    With ids, each one's result is reported; the exit code is 1 if any was not retried.
    --failed counts them and asks first; with no terminal to ask on, or --json, it needs --yes.
    """
    if failed == bool(job_ids):
        fail("give job ids, or --failed [--queue Q] [--fresh], not both", code=2)
    if not failed and (queue is not None or fresh):
        fail("--queue and --fresh go with --failed, not with job ids", code=2)
    if failed:
        _retry_failed(queue, fresh, yes, dsn, schema, as_json)
        return
    _per_id(job_ids or [], _retry_one, verb="retried", dsn=dsn, schema=schema, as_json=as_json)


def _cancel_matching(
    queue: str | None,
    task: str | None,
    state: str | None,
    yes: bool,
    dsn: str | None,
    schema: str | None,
    as_json: bool,
) -> None:
    where = _filters(queue, task, state)
    data: dict[str, Any] = {"queue": queue, "task": task, "state": state}
    with errors():
        qapp = _app(dsn, schema)
        try:
            count = qapp.count_unfinished(queue, task, state)
        except pgqueue.ValidationError as exc:  # a state that is not an unfinished one
            fail(f"cannot cancel by these filters: {exc}", code=2)
        if count == 0:
            report(
                as_json,
                f"no unfinished jobs match{where}: nothing cancelled",
                {"cancelled": 0, "running": 0, **data},
            )
            return
        if not yes:
            running = _running(qapp, queue, task, state)
            _confirm(
                f"this would cancel {count} unfinished job(s){where}"
                + (f", {running} of them running" if running else ""),
                "Cancel them?",
                "cancel not confirmed: nothing cancelled",
                as_json,
            )
        # Counted just before: cancel_many reports one total, running jobs (only asked to
        # stop) included.
        running = _running(qapp, queue, task, state)
        cancelled = qapp.cancel_many(queue, task, state)
    running = min(running, cancelled)
    message = f"cancelled {cancelled} job(s){where}"
    if running:
        message += (
            f"; {running} of them running, asked to stop: their workers stop them at the"
            " next heartbeat"
        )
    report(as_json, message, {"cancelled": cancelled, "running": running, **data})


def _running(qapp: pgqueue.App, queue: str | None, task: str | None, state: str | None) -> int:
    if state not in (None, "running"):
        return 0
    return qapp.count_unfinished(queue, task, "running")


@app.command()
def cancel(
    job_ids: Annotated[list[str] | None, typer.Argument(metavar="ID")] = None,
    queue: Annotated[
        str | None, typer.Option("--queue", "-q", help="Every unfinished job of this queue.")
    ] = None,
    task: Annotated[
        str | None, typer.Option("--task", help="Every unfinished job of this task.")
    ] = None,
    state: Annotated[
        str | None,
        typer.Option(
            "--state", help="Only jobs in this state: scheduled, available, retrying or running."
        ),
    ] = None,
    yes: YesOption = False,
    dsn: DsnOption = None,
    schema: SchemaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel jobs, by id or by filter: queued ones at once, running ones at their worker's
    next heartbeat.

    With ids, each id's result is reported; the exit code is 1 if any was not cancelled.
    With filters (at least one), it counts the jobs and asks first; with no terminal to ask
    on, or --json, it needs --yes.
    """
    filtered = any(v is not None for v in (queue, task, state))
    if job_ids and filtered:
        fail("give job ids, or filters (--queue, --task, --state), not both", code=2)
    if not job_ids and not filtered:
        fail(
            "give job ids, or at least one filter (--queue, --task, --state):"
            " an unfiltered cancel would stop every job",
            code=2,
        )
    if not job_ids:
        _cancel_matching(queue, task, state, yes, dsn, schema, as_json)
        return
    _per_id(job_ids, _cancel_one, verb="cancelled", dsn=dsn, schema=schema, as_json=as_json)


@app.command()
def demo(
    dsn: Annotated[
        str | None,
        typer.Option("--dsn", help="Use this database instead of an embedded one."),
    ] = None,
    data_dir: Annotated[
        str, typer.Option("--data-dir", help="Where the embedded PostgreSQL keeps its files.")
    ] = ".pgqueue-demo",
    jobs: Annotated[int, typer.Option("--jobs", min=1, help="How many quick jobs.")] = 200,
    keep_running: Annotated[
        bool,
        typer.Option(
            "--keep-running",
            help="After the demo, keep its worker (and the embedded PostgreSQL) running until"
            " Ctrl-C or SIGTERM, to look around with status and top.",
        ),
    ] = False,
) -> None:
    """See jobs flow: example jobs and a live worker, in a schema of its own (pgqueue_demo)
    on an embedded PostgreSQL, or on --dsn / $PGQUEUE_DSN: never your queues."""
    from .demo import run_demo

    with errors():
        run_demo(
            dsn=dsn or os.environ.get("PGQUEUE_DSN"),
            data_dir=data_dir,
            quick_jobs=jobs,
            console=out,
            keep_running=keep_running,
        )


def main() -> None:
    # The pool's background reconnection warnings are noise on a terminal: a command reports
    # a database it cannot reach in its own one-line error.
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    app()
