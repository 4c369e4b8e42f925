"""`pgqueue worker` parsed without the typer app (cli/_worker_fast.py): the same keyword
arguments as typer's command for every command line it accepts, typer's own handling for
every one it does not, and a worker process that never imports typer, rich or pydantic."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from pgqueue.cli._worker_fast import parse

import pgqueue
from tests.helpers import ROOT

ACCEPTED = [
    ["m:app"],
    ["m:app", "-c", "5"],
    ["-c5", "m:app"],
    ["m:app", "--concurrency=7", "--prefetch", "0"],
    ["m:app", "-q", "emails", "-q", "reports", "--queue=billing"],
    ["m:app", "--exclude-queue", "slow"],
    ["m:app", "--burst"],
    ["m:app", "--no-listen", "--no-prepared-statements"],
    ["m:app", "--listen", "--prepared-statements", "--listen-dsn", "postgresql://h/db"],
    ["m:app", "--poll-interval", "0.25", "--shutdown-grace", "0", "--heartbeat-interval=1e-1"],
    ["m:app", "--heartbeat-timeout", "-1", "--max-rescues", "+2"],
    ["m:app", "--metrics-port", "9108", "--metrics-addr", "0.0.0.0"],
    ["m:app", "--dsn", "postgresql://h/x", "--schema", "jobs"],
    ["m:app", "--log-level", "debug", "--log-format", "json"],
    ["m:app", "--log-format", "xml"],  # accepted by both; the worker body refuses it
    ["m:app", "-c", "3", "-c", "4"],  # the last one wins, as in typer
    ["--", "m:app"],
    ["m:app", "-q", "-dash-named"],  # an option's value is the next argument, whatever it is
]

LEDGER = "CREATE TABLE ledger (job_id bigint NOT NULL, n int NOT NULL, pid int NOT NULL)"

LEFT_TO_TYPER = [
    [],  # no APP
    ["--help"],
    ["m:app", "-h"],
    ["m:app", "--concurency", "5"],  # a typo
    ["m:app", "-c"],  # a value missing
    ["m:app", "-c", "0"],  # below the minimum
    ["m:app", "-c", "five"],
    ["m:app", "-c", "1_0"],  # Python's int() takes it, typer does not
    ["m:app", "--poll-interval", "nan"],
    ["m:app", "--burst=1"],
    ["m:app", "other:app"],
    ["m:app", "-cq"],  # not an integer: never read as two flags
    ["m:app", "--json"],
]


def _typer_params(argv: list[str]) -> dict[str, Any]:
    import typer.main
    from pgqueue.cli import app

    command = typer.main.get_command(app).commands["worker"]  # type: ignore[attr-defined]
    return dict(command.make_context("worker", list(argv)).params)


@pytest.mark.parametrize("argv", ACCEPTED, ids=" ".join)
def test_the_fast_parser_passes_what_typer_would(
    argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGQUEUE_DSN", raising=False)
    monkeypatch.delenv("PGQUEUE_SCHEMA", raising=False)
    fast = parse(argv)
    assert fast is not None, argv
    assert fast == _typer_params(argv)


def test_dsn_and_schema_fall_back_to_the_environment_as_in_typer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PGQUEUE_DSN", "postgresql://env/db")
    monkeypatch.setenv("PGQUEUE_SCHEMA", "envschema")
    fast = parse(["m:app"])
    assert fast is not None
    assert (fast["dsn"], fast["schema"]) == ("postgresql://env/db", "envschema")
    assert fast == _typer_params(["m:app"])
    assert parse(["m:app", "--dsn", "postgresql://flag/db"]) == _typer_params(
        ["m:app", "--dsn", "postgresql://flag/db"]
    )


@pytest.mark.parametrize("argv", LEFT_TO_TYPER, ids=lambda a: " ".join(a) or "(none)")
def test_what_the_fast_parser_is_unsure_of_goes_to_typer(argv: list[str]) -> None:
    assert parse(argv) is None


def _run(args: list[str], code: str, dsn: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PGQUEUE_DSN=dsn, PYTHONPATH=str(ROOT), COLUMNS="200")
    program = (
        "import sys\n"
        f"sys.argv = ['pgqueue', *{args!r}]\n"
        "import pgqueue.cli\n"
        "try:\n"
        "    pgqueue.cli.main()\n"
        "finally:\n"
        f"    {code}\n"
    )
    return subprocess.run(
        [sys.executable, "-c", program],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_worker_runs_jobs_without_loading_typer_rich_or_pydantic(
    app: pgqueue.App, dsn: str, db: Any
) -> None:
    db.execute(LEDGER)

    @app.task(name="ledger.record")  # run by tests.apps.ledger in the worker process
    def record(n: int) -> int: ...

    jobs = [record.enqueue(n=n) for n in range(3)]
    report = "print(sorted(m for m in ('typer', 'rich', 'pydantic') if m in sys.modules))"
    done = _run(["worker", "tests.apps.ledger:app", "--burst", "-c", "2"], report, dsn)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert [job.wait(timeout=10) for job in jobs] == [0, 1, 2]
    assert db.execute("SELECT count(*) FROM ledger").fetchone() == (3,)


def test_a_worker_command_line_it_is_unsure_of_gets_typers_usage_error(dsn: str) -> None:
    done = _run(["worker", "tests.apps.ledger:app", "-c", "0"], "pass", dsn)
    assert done.returncode == 2
    assert "Invalid value for '-c' / '--concurrency'" in done.stderr


def test_an_error_after_parsing_is_one_line_and_its_exit_code(dsn: str) -> None:
    done = _run(["worker", "no_such_module_here:app", "--burst"], "pass", dsn)
    assert done.returncode == 2
    assert "cannot import 'no_such_module_here'" in done.stderr
    assert "Traceback" not in done.stderr
