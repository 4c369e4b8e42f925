"""The CLI's sharp edges (issue 11): destructive durations, --json errors, partial results,
columns that vanish, capped counts, --version, unknown queues and unclosed pools."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from pgqueue.cli import app as cli
from typer.testing import CliRunner

import pgqueue
from tests.helpers import ROOT

runner = CliRunner()
#: The commands' module (`pgqueue.cli.main` the attribute is the entry point function).
cli_main = importlib.import_module("pgqueue.cli._common")

LONG_TASK = "shop.integrations.payments.reconcile_settlement_batches_for_merchant_accounts"
LONG_QUEUE = "payments-settlement-reconciliation-eu-west"


def _finished(db: Any, count: int, age: str = "30 days", task: str = "t") -> None:
    db.execute(
        "INSERT INTO pgqueue.jobs (task, state, finished_at, created_at)"
        " SELECT %s, 'completed', now() - %s::interval, now() - %s::interval"
        " FROM generate_series(1, %s)",
        [task, age, age, count],
    )


def _count(db: Any) -> int:
    row = db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone()
    return int(row[0])


def _json_error(text: str) -> dict[str, Any]:
    """The one JSON object a failing --json command prints on stderr."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, text
    data = json.loads(lines[0])
    assert set(data) == {"error", "code"}, data
    return dict(data)


# --- 1. a destructive duration carries a unit, and a big prune asks first -----------------


def test_prune_rejects_a_duration_without_unit(app: pgqueue.App, dsn: str, db: Any) -> None:
    _finished(db, 3, age="1 minute")
    result = runner.invoke(cli, ["prune", "--older-than", "7", "--dsn", dsn])
    assert result.exit_code == 2, result.output
    assert "unit" in result.stderr and "7d" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert _count(db) == 3  # nothing deleted
    for good in ("90s", "10m", "2h", "7d"):
        assert runner.invoke(cli, ["prune", "--older-than", good, "--dsn", dsn]).exit_code == 0
    assert _count(db) == 3  # finished a minute ago: younger than each of these
    assert runner.invoke(cli, ["prune", "--older-than", "30s", "--dsn", dsn]).exit_code == 0
    assert _count(db) == 0


def test_jobs_durations_need_a_unit_too(app: pgqueue.App, dsn: str) -> None:
    for option in ("--older-than", "--newer-than"):
        bare = runner.invoke(cli, ["jobs", option, "5", "--dsn", dsn])
        assert bare.exit_code == 2 and "unit" in bare.stderr, bare.output
        assert runner.invoke(cli, ["jobs", option, "5m", "--dsn", dsn]).exit_code == 0


def test_big_prune_needs_yes_when_nobody_can_answer(app: pgqueue.App, dsn: str, db: Any) -> None:
    _finished(db, 1001)
    refused = runner.invoke(cli, ["prune", "--older-than", "7d", "--dsn", dsn])
    assert refused.exit_code == 1, refused.output
    assert "1001" in refused.stderr and "--yes" in refused.stderr
    assert "Aborted" not in refused.output and "Traceback" not in refused.output
    assert _count(db) == 1001
    as_json = runner.invoke(cli, ["prune", "--older-than", "7d", "--dsn", dsn, "--json"])
    assert as_json.exit_code == 1 and "--yes" in _json_error(as_json.stderr)["error"]
    assert as_json.stdout == ""
    assert _count(db) == 1001
    done = runner.invoke(cli, ["prune", "--older-than", "7d", "-y", "--dsn", dsn, "--json"])
    assert done.exit_code == 0 and json.loads(done.stdout) == {"deleted": 1001}


def test_big_prune_asks_on_a_terminal(
    app: pgqueue.App, dsn: str, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _finished(db, 1001)
    monkeypatch.setattr(cli_main, "_interactive", lambda: True)
    no = runner.invoke(cli, ["prune", "--dsn", dsn], input="n\n")
    assert no.exit_code == 1 and "not confirmed" in no.stderr, no.output
    assert _count(db) == 1001
    eof = runner.invoke(cli, ["prune", "--dsn", dsn], input="")
    assert eof.exit_code == 1 and "not confirmed" in eof.stderr, eof.output
    assert "Aborted" not in eof.output
    assert _count(db) == 1001
    yes = runner.invoke(cli, ["prune", "--dsn", dsn], input="y\n")
    assert yes.exit_code == 0 and "deleted 1001 finished job(s)" in yes.stdout, yes.output
    assert _count(db) == 0


def test_small_prune_does_not_ask(app: pgqueue.App, dsn: str, db: Any) -> None:
    _finished(db, 1000)
    result = runner.invoke(cli, ["prune", "--dsn", dsn])
    assert result.exit_code == 0 and "deleted 1000" in result.stdout, result.output


# --- 2. with --json, errors are JSON too -------------------------------------------------


def test_json_commands_print_errors_as_json(
    app: pgqueue.App, dsn: str, empty_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGQUEUE_DSN", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    cases = [
        (["job", "999999", "--dsn", dsn, "--json"], 1, "no job with id 999999"),
        (["status", "--dsn", empty_dsn, "--json"], 1, "pgqueue migrate"),
        (["status", "--json"], 1, "PGQUEUE_DSN"),
        (["jobs", "--state", "exploded", "--dsn", dsn, "--json"], 1, "exploded"),
        (["prune", "--older-than", "7", "--dsn", dsn, "--json"], 2, "unit"),
        (["retry", "--dsn", dsn, "--json"], 2, "--failed"),
        (["jobs", "--limit", "0", "--dsn", dsn, "--json"], 2, "--limit"),  # a usage error
        (
            [
                "status",
                "--json",
                "--dsn",
                "postgresql://u:s3cret@127.0.0.1:1/db?connect_timeout=2",
            ],
            1,
            "cannot reach the database",
        ),
    ]
    for args, code, fragment in cases:
        result = runner.invoke(cli, args)
        assert result.exit_code == code, (args, result.output)
        error = _json_error(result.stderr)
        assert error["code"] == code and fragment in error["error"], (args, error)
        assert result.stdout == "", (args, result.stdout)
        assert "s3cret" not in result.output


def test_without_json_errors_stay_one_red_line(app: pgqueue.App, dsn: str) -> None:
    result = runner.invoke(cli, ["job", "999999", "--dsn", dsn])
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: no job with id 999999"


# --- 3. cancel reports every id -----------------------------------------------------------


def test_cancel_reports_each_id(app: pgqueue.App, dsn: str, db: Any) -> None:
    good = app.enqueue("a.b", {}, delay=3600)
    running = app.enqueue("a.b", {})
    db.execute(
        "UPDATE pgqueue.jobs SET state = 'running', attempt = 1, started_at = now() WHERE id = %s",
        [running.id],
    )
    done = app.enqueue("a.b", {})
    db.execute(
        "UPDATE pgqueue.jobs SET state = 'completed', finished_at = now() WHERE id = %s",
        [done.id],
    )
    ids = [str(good.id), str(running.id), str(done.id), "999999", "abc"]
    result = runner.invoke(cli, ["cancel", *ids, "--dsn", dsn])
    assert result.exit_code == 1, result.output
    lines = {line.split(":")[0].removeprefix("job ") for line in result.stdout.splitlines()}
    assert set(ids) <= lines, result.stdout
    assert f"job {good.id}: cancelled" in result.stdout
    assert f"job {running.id}: cancel requested" in result.stdout
    assert "next heartbeat" in result.stdout
    assert f"job {done.id}: not cancelled: already completed" in result.stdout
    assert "job 999999: not cancelled: not found" in result.stdout
    assert "job abc: not cancelled: invalid id" in result.stdout
    assert "3 of 5 job(s) not cancelled" in result.stderr
    assert app.get_job(good.id).state is pgqueue.JobState.CANCELLED
    assert app.get_job(running.id).state is pgqueue.JobState.RUNNING

    as_json = runner.invoke(cli, ["cancel", str(running.id), "999999", "--dsn", dsn, "--json"])
    assert as_json.exit_code == 1
    data = json.loads(as_json.stdout)
    assert data["jobs"] == [
        {"id": running.id, "result": "cancel_requested"},
        {"id": 999999, "result": "not_found"},
    ]
    assert _json_error(as_json.stderr)["code"] == 1

    fine = runner.invoke(cli, ["cancel", str(good.id), "--dsn", dsn, "--json"])
    assert fine.exit_code == 1  # cancelled already: finished
    other = app.enqueue("a.b", {})
    ok = runner.invoke(cli, ["cancel", str(other.id), "--dsn", dsn, "--json"])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["cancelled"] == 1


def test_retry_reports_each_id(app: pgqueue.App, dsn: str) -> None:
    job = app.enqueue("a.b", {}, delay=3600)
    app.cancel(job.id)
    result = runner.invoke(cli, ["retry", str(job.id), "999999", "--dsn", dsn])
    assert result.exit_code == 1
    assert f"job {job.id}: retrying" in result.stdout
    assert "job 999999: not retried" in result.stdout
    assert app.get_job(job.id).state is pgqueue.JobState.AVAILABLE


# --- 4. piped output keeps every column ----------------------------------------------------


def test_piped_tables_keep_every_column(app: pgqueue.App, dsn: str, db: Any) -> None:
    job = app.enqueue(LONG_TASK, {}, queue=LONG_QUEUE)
    db.execute(
        "UPDATE pgqueue.jobs SET state = 'failed', attempt = 3, finished_at = now(),"
        " errors = jsonb_build_array(jsonb_build_object('type', 'ConnectionError',"
        " 'message', 'settlement API answered 503 Service Unavailable'))"
        " WHERE id = %s",
        [job.id],
    )
    listed = runner.invoke(cli, ["jobs", "--dsn", dsn])
    assert listed.exit_code == 0, listed.output
    for header in ("id", "task", "queue", "state", "attempt", "created_at", "last_error"):
        assert header in listed.stdout, (header, listed.stdout)
    assert LONG_TASK in listed.stdout and LONG_QUEUE in listed.stdout
    assert "settlement API answered 503 Service Unavailable" in listed.stdout
    assert "…" not in listed.stdout

    status = runner.invoke(cli, ["status", "--dsn", dsn])
    assert status.exit_code == 0, status.output
    for header in (
        "queue",
        "sched",
        "avail",
        "run",
        "retry",
        "done",
        "failed",
        "cancel",
        "lag",
        "done/m",
        "fail/h",
    ):
        assert header in status.stdout, (header, status.stdout)
    assert LONG_QUEUE in status.stdout and "…" not in status.stdout


def test_narrow_terminal_folds_instead_of_dropping_columns() -> None:
    from io import StringIO

    from pgqueue.cli._tables import jobs_table, queue_table
    from rich.console import Console

    stats = [
        pgqueue.QueueStats(
            queue=LONG_QUEUE,
            scheduled=1,
            available=22,
            running=3,
            retrying=4,
            completed=5555,
            failed=6,
            cancelled=7,
            lag_seconds=8.0,
            failed_last_hour=9,
            completed_last_minute=10,
            paused=True,
        )
    ]
    for table, values in (
        (queue_table(stats), ["5555", "22", "10"]),  # the last column's value too
        (jobs_table([{"id": 1, "task": LONG_TASK, "last_error": "boom"}], stuck=False), ["boom"]),
    ):
        console = Console(file=StringIO(), width=60, force_terminal=True, color_system=None)
        console.print(table)
        text = console.file.getvalue()  # type: ignore[attr-defined]
        assert max(len(line) for line in text.splitlines()) <= 60
        assert "…" not in text, text
        for value in values:
            assert value in text, (value, text)


# --- 5. counts that are not capped ------------------------------------------------------


def test_status_counts_every_stuck_job_and_every_waiting_one(
    app: pgqueue.App, dsn: str, db: Any
) -> None:
    db.execute(
        "INSERT INTO pgqueue.jobs (task, queue, state, rescue_count, attempt)"
        " SELECT 't', 'troubled', 'available', 1, 1 FROM generate_series(1, 1005)"
    )
    assert app.count_stuck() == 1005
    app.enqueue_many("x.y", [{}] * 3, queue="held")
    db.execute("UPDATE pgqueue.jobs SET state = 'retrying', run_at = now() WHERE queue = 'held'")
    app.enqueue("x.y", {}, queue="held")
    app.pause("held")
    result = runner.invoke(cli, ["status", "--dsn", dsn])
    assert result.exit_code == 0, result.output
    assert "1005 job(s)" in result.stdout, result.stdout
    assert "1000 job(s)" not in result.stdout
    assert "queue held is paused (4 jobs waiting)" in result.stdout, result.stdout
    frame = runner.invoke(cli, ["top", "--once", "--dsn", dsn])
    assert "1005 job(s)" in frame.stdout and "(4 jobs waiting)" in frame.stdout


# --- 6. --version ---------------------------------------------------------------------------


def test_version() -> None:
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"pgqueue {pgqueue.__version__}"


# --- 7. a queue nobody uses is paused, with a warning ------------------------------------


def test_pause_warns_about_an_unknown_queue(app: pgqueue.App, dsn: str) -> None:
    app.enqueue("a.b", {}, queue="emails")
    app.enqueue("a.b", {}, queue="reports")
    result = runner.invoke(cli, ["pause", "emials", "--dsn", dsn])
    assert result.exit_code == 0, result.output
    assert "queue emials paused" in result.stdout
    assert "warning" in result.stderr and "emials" in result.stderr
    assert "emails" in result.stderr and "reports" in result.stderr
    assert next(s for s in app.queue_stats() if s.queue == "emials").paused  # paused anyway
    known = runner.invoke(cli, ["pause", "emails", "--dsn", dsn])
    assert known.exit_code == 0 and known.stderr == ""
    as_json = runner.invoke(cli, ["pause", "nosuch", "--dsn", dsn, "--json"])
    data = json.loads(as_json.stdout)
    assert data["paused"] is True and "emails" in data["warning"]


# --- 8. the CLI closes what it opens ---------------------------------------------------------


def test_commands_close_their_app(app: pgqueue.App, dsn: str) -> None:
    """An App left open keeps its pool's threads; one dropped later is collected on any
    thread, its pool's own included: `Exception ignored in ConnectionPool.__del__`."""
    app.enqueue("a.b", {}, queue="emails")
    for args in (["status"], ["jobs", "--json"], ["job", "999999"], ["pause", "emails"]):
        before = set(threading.enumerate())
        result = runner.invoke(cli, [*args, "--dsn", dsn])
        assert result.exit_code in (0, 1), result.output
        left = [t.name for t in set(threading.enumerate()) - before if t.is_alive()]
        assert left == [], (args, left)


def test_commands_exit_cleanly_as_processes(app: pgqueue.App, dsn: str) -> None:
    app.enqueue("a.b", {}, queue="emails")
    env = {k: v for k, v in os.environ.items() if k != "PGQUEUE_DSN"}
    for args in (["status"], ["jobs"], ["status", "--json"], ["job", "999999"]):
        proc = subprocess.run(
            [sys.executable, "-m", "pgqueue.cli", *args, "--dsn", dsn],
            cwd=ROOT,
            env={**env, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode in (0, 1), proc.stderr
        assert "Exception ignored" not in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr, (args, proc.stderr)


# --- 9. a worker's import error says where it happened --------------------------------------


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())


def _worker_import_error(app_path: str, root: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(root)
    monkeypatch.syspath_prepend(str(root))
    result = runner.invoke(cli, ["worker", app_path])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_worker_import_error_names_the_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(
        tmp_path,
        {
            "shop_err/__init__.py": "",
            "shop_err/main.py": """
                import pgqueue

                from shop_err import tasks

                app = pgqueue.App("postgresql://localhost/shop")
            """,
            "shop_err/tasks.py": "# settings\n" * 11 + "RATE = undefined_setting * 2\n",  # 12
        },
    )
    line = _worker_import_error("shop_err.main:app", tmp_path, monkeypatch)
    assert line == (
        "error: cannot import 'shop_err.main': NameError: name 'undefined_setting' is not"
        f" defined (at {Path('shop_err', 'tasks.py')}:12)"
    ), line


def test_worker_syntax_error_names_the_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(
        tmp_path,
        {
            "shop_syntax.py": """
                import pgqueue

                def broken(:
                    pass
            """
        },
    )
    line = _worker_import_error("shop_syntax:app", tmp_path, monkeypatch)
    assert line.startswith("error: cannot import 'shop_syntax': SyntaxError: "), line
    assert line.endswith("(at shop_syntax.py:3)"), line


def test_worker_missing_module_has_no_location(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    line = _worker_import_error("no_such_shop_module:app", tmp_path, monkeypatch)
    assert line == (
        "error: cannot import 'no_such_shop_module': ModuleNotFoundError:"
        " No module named 'no_such_shop_module'"
    ), line  # no frame of pgqueue's own, nor of the import machinery
    _write(tmp_path, {"shop_dep.py": "import pgqueue\nimport no_such_shop_dependency\n"})
    line = _worker_import_error("shop_dep:app", tmp_path, monkeypatch)
    assert "No module named 'no_such_shop_dependency' (at shop_dep.py:2)" in line, line
