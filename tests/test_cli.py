"""The CLI through typer's runner, against a real database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pgqueue.cli import app as cli
from pgqueue.cli._output import redact_dsn
from typer.testing import CliRunner

import pgqueue
from tests.helpers import ROOT, wait_until

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


USER_JOBS = "SELECT count(*) FROM pgqueue.jobs"
#: Jobs the demo enqueued and published (its schedule adds one per slot while it runs).
DEMO_JOBS = "SELECT count(*) FROM pgqueue_demo.jobs WHERE schedule IS NULL"
DEMO_LIVE_WORKERS = "SELECT count(*) FROM pgqueue_demo.workers WHERE stopped_at IS NULL"


def _scalar(db: Any, query: str) -> int:
    row = db.execute(query).fetchone()
    return int(row[0])


def test_demo_runs_every_kind_of_job_in_its_own_schema(dsn: str, db: Any) -> None:
    """With PGQUEUE_DSN set, the demo once wrote its jobs on the user's queues (emails,
    reports, webhooks) in schema pgqueue, and the user's workers failed them."""
    result = runner.invoke(cli, ["demo", "--jobs", "5"], env={"PGQUEUE_DSN": dsn})
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0]
    assert first.startswith(f"pgqueue demo: schema pgqueue_demo of {redact_dsn(dsn)}"), first
    assert "final" in result.output
    assert "--schema pgqueue_demo" in result.stdout  # the next steps point at its schema
    assert _scalar(db, USER_JOBS) == 0  # the user's schema: untouched
    counts = dict(
        db.execute(
            "SELECT state, count(*) FROM pgqueue_demo.jobs WHERE schedule IS NULL GROUP BY 1"
        ).fetchall()
    )
    # 5 quick + 3 scheduled emails, 4 reports, 6 webhooks, 3 orders published to two
    # subscribers, the workflow (the export, its 8 pages and the notification that waits for
    # it) and 24 + 3 x 3 exports on the rate-limited fair queue complete; the card charge
    # fails.
    assert counts == {"completed": 67, "failed": 1}
    published = db.execute(
        "SELECT task, count(*) FROM pgqueue_demo.job_status WHERE topic = 'orders.created'"
        " GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert published == [("demo.audit", 3), ("demo.ship_order", 3)]
    ticks = db.execute(
        "SELECT count(*), count(DISTINCT scheduled_for) FROM pgqueue_demo.job_status"
        " WHERE schedule = 'demo.every-3s'"
    ).fetchone()
    assert ticks is not None and ticks[0] == ticks[1] >= 1  # the schedule fired, once a slot
    assert "exports (fair, 20/s, 4/s per customer)" in result.stdout
    assert _scalar(db, "SELECT count(*) FROM pgqueue_demo.queues WHERE limited") == 1
    retried = db.execute("SELECT count(*) FROM pgqueue_demo.jobs WHERE attempt > 1").fetchone()
    assert retried is not None and retried[0] >= 4


def test_demo_says_where_its_embedded_server_is(
    dsn: str, db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pgqueue.cli.demo as demo_module

    started: list[str] = []

    def embedded(data_dir: str) -> str:  # the test's database stands in for pgserver's
        started.append(data_dir)
        return dsn

    monkeypatch.setattr(demo_module, "embedded_dsn", embedded)
    monkeypatch.delenv("PGQUEUE_DSN", raising=False)
    data_dir = tmp_path / "demo-data"
    result = runner.invoke(cli, ["demo", "--jobs", "1", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert started == [str(data_dir)]
    where = f"pgqueue demo: schema pgqueue_demo of an embedded PostgreSQL in {data_dir}"
    assert result.stdout.splitlines()[0] == where, result.stdout
    assert "--keep-running" in result.stdout  # how to look around afterwards
    # 21 jobs, the workflow's 10 (an export, its 8 pages, a notification), the 33 exports.
    assert (_scalar(db, USER_JOBS), _scalar(db, DEMO_JOBS)) == (0, 64)

    waited: list[bool] = []
    monkeypatch.setattr(demo_module, "_wait_for_stop", lambda stop, worker: waited.append(True))
    args = ["demo", "--jobs", "1", "--data-dir", str(data_dir), "--keep-running"]
    kept = runner.invoke(cli, args)
    assert kept.exit_code == 0, kept.output
    assert waited == [True]
    assert (
        "The demo worker and its embedded PostgreSQL keep running until Ctrl-C (or SIGTERM)"
        in kept.stdout
    ), kept.stdout
    assert f"pgqueue top --dsn '{redact_dsn(dsn)}' --schema pgqueue_demo" in kept.stdout
    assert "stopping the demo worker and its embedded PostgreSQL" in kept.stdout


def test_demo_keep_running_until_sigterm(dsn: str, db: Any, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PGQUEUE_DSN"}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    output = tmp_path / "demo.out"
    args = ["demo", "--dsn", dsn, "--jobs", "2", "--keep-running"]
    with output.open("wb") as sink:  # a file, not a pipe nobody reads while it runs
        proc = subprocess.Popen(
            [sys.executable, "-m", "pgqueue.cli", *args],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: "Ctrl-C" in output.read_text() or proc.poll() is not None, 90, "demo")
        assert proc.poll() is None, output.read_text()
        assert _scalar(db, DEMO_JOBS + " AND finished_at IS NULL") == 0
        assert _scalar(db, DEMO_LIVE_WORKERS) == 1
        # The worker still works: a job enqueued now is done.
        with pgqueue.App(dsn, schema="pgqueue_demo") as later:
            job = later.enqueue("demo.send_email", {"to": "late@example.com"})
            assert job.wait(timeout=30) == {"sent_to": "late@example.com"}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, output.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = output.read_text()
    for command in ("status", "top"):
        assert f"pgqueue {command} --dsn '{redact_dsn(dsn)}' --schema pgqueue_demo" in text
    assert "Traceback" not in text and "Exception ignored" not in text, text
    assert _scalar(db, DEMO_LIVE_WORKERS) == 0  # stopped cleanly
    assert _scalar(db, USER_JOBS) == 0


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
