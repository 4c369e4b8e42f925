"""The CLI through typer's runner, against a real database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import psycopg
import pytest
from pgqueue.cli import app as cli
from pgqueue.cli._output import redact_dsn
from typer.testing import CliRunner

import pgqueue
from tests.helpers import ROOT

runner = CliRunner()


def test_migrate_command(empty_dsn: str) -> None:
    first = runner.invoke(cli, ["migrate", "--dsn", empty_dsn])
    assert first.exit_code == 0, first.output
    assert "applied migrations 1" in first.output
    again = runner.invoke(cli, ["migrate"], env={"PGQUEUE_DSN": empty_dsn})
    assert again.exit_code == 0 and "up to date" in again.output


def test_migrate_with_schema_option(empty_dsn: str) -> None:
    result = runner.invoke(cli, ["migrate", "--dsn", empty_dsn, "--schema", "jobs_b"])
    assert result.exit_code == 0, result.output
    pgqueue.App(empty_dsn, schema="jobs_b").enqueue("x.y", {})
    bad = runner.invoke(cli, ["migrate", "--dsn", empty_dsn, "--schema", 'x"; drop'])
    assert bad.exit_code == 1 and "invalid schema name" in bad.output


def test_status_table_and_json(app: pgqueue.App, dsn: str) -> None:
    app.enqueue("a.b", {}, queue="emails")
    app.enqueue("a.b", {}, queue="emails")
    app.enqueue("a.b", {}, queue="reports", delay=3600)
    table = runner.invoke(cli, ["status", "--dsn", dsn])
    assert table.exit_code == 0, table.output
    assert "emails" in table.output and "reports" in table.output
    data = runner.invoke(cli, ["status", "--dsn", dsn, "--json"])
    rows = {r["queue"]: r for r in json.loads(data.output)["queues"]}
    assert rows["emails"]["available"] == 2 and rows["reports"]["scheduled"] == 1
    assert rows["emails"]["paused"] is False


def test_job_retry_cancel_commands(app: pgqueue.App, dsn: str) -> None:
    job = app.enqueue("a.b", {"k": 1}, delay=3600)
    shown = runner.invoke(cli, ["job", str(job.id), "--dsn", dsn, "--json"])
    assert json.loads(shown.output)["args"] == {"k": 1}
    assert "scheduled" in runner.invoke(cli, ["job", str(job.id), "--dsn", dsn]).output
    assert runner.invoke(cli, ["cancel", str(job.id), "--dsn", dsn]).exit_code == 0
    assert app.get_job(job.id).state is pgqueue.JobState.CANCELLED
    assert runner.invoke(cli, ["retry", str(job.id), "--dsn", dsn]).exit_code == 0
    assert app.get_job(job.id).state is pgqueue.JobState.AVAILABLE
    missing = runner.invoke(cli, ["job", "999999", "--dsn", dsn])
    assert missing.exit_code == 1 and "no job with id 999999" in missing.output


def test_errors_are_one_line_without_traceback(
    monkeypatch: pytest.MonkeyPatch, empty_dsn: str
) -> None:
    monkeypatch.delenv("PGQUEUE_DSN", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    no_dsn = runner.invoke(cli, ["status"])
    assert no_dsn.exit_code == 1
    assert "PGQUEUE_DSN" in no_dsn.output and "Traceback" not in no_dsn.output
    unmigrated = runner.invoke(cli, ["status", "--dsn", empty_dsn])
    assert unmigrated.exit_code == 1 and "pgqueue migrate" in unmigrated.output
    down = runner.invoke(
        cli, ["status", "--dsn", "postgresql://u:s3cret@127.0.0.1:1/db?connect_timeout=2"]
    )
    assert down.exit_code == 1 and "cannot reach the database" in down.output
    assert "s3cret" not in down.output


def test_redaction_hides_passwords() -> None:
    assert redact_dsn("postgresql://bob:hunter2@db/x failed") == "postgresql://bob:***@db/x failed"
    assert redact_dsn("host=db password=hunter2 user=bob") == "host=db password=*** user=bob"


def test_worker_command_bad_app_path(dsn: str) -> None:
    for path, fragment in [
        ("nocolon", "package.module:app"),
        ("json:dumps", "is not a pgqueue.App"),
    ]:
        result = runner.invoke(cli, ["worker", path, "--dsn", dsn])
        assert result.exit_code == 2, result.output
        assert fragment in result.output


def test_demo_runs_every_kind_of_job(dsn: str, db: Any) -> None:
    result = runner.invoke(cli, ["demo", "--dsn", dsn, "--jobs", "20"])
    assert result.exit_code == 0, result.output
    assert "final" in result.output
    counts = dict(db.execute("SELECT state, count(*) FROM pgqueue.jobs GROUP BY 1").fetchall())
    # 20 quick + 3 scheduled emails, 4 reports, 6 webhooks complete; the card charge fails.
    assert counts == {"completed": 33, "failed": 1}
    retried = db.execute("SELECT count(*) FROM pgqueue.jobs WHERE attempt > 1").fetchone()
    assert retried is not None and retried[0] >= 4


def test_worker_dsn_option_reaches_an_app_built_from_the_environment(dsn: str) -> None:
    """`app = pgqueue.App()` in the worker module, the database given only as --dsn."""

    app = pgqueue.App(dsn)
    job = app.enqueue("ledger.record", {"n": 1})
    env = {k: v for k, v in os.environ.items() if k != "PGQUEUE_DSN"}

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE ledger (job_id bigint, n int, pid int)")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pgqueue.cli",
            "worker",
            "tests.apps.ledger:app",
            "--burst",
            "--dsn",
            dsn,
        ],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout.decode()[-2000:] + proc.stderr.decode()[-2000:]
    assert app.get_job(job.id).state is pgqueue.JobState.COMPLETED
