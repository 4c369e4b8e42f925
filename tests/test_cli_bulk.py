"""Bulk operations in the CLI (issue 11): `cancel --queue/--task/--state` and
`retry --failed [--fresh]`, each counted first and confirmed (or --yes)."""

from __future__ import annotations

import importlib
import json
from typing import Any

import pytest
from pgqueue.cli import app as cli
from typer.testing import CliRunner

import pgqueue
from tests.test_cli_errors import _json_error

runner = CliRunner()
cli_main = importlib.import_module("pgqueue.cli._common")


def _states(db: Any, queue: str) -> dict[str, int]:
    rows = db.execute(
        "SELECT state, count(*) FROM pgqueue.jobs WHERE queue = %s GROUP BY 1", [queue]
    ).fetchall()
    return {str(state): int(n) for state, n in rows}


def _jobs(
    db: Any, queue: str, count: int, task: str = "x.y", state: str = "available"
) -> list[int]:
    """Jobs written directly (a scheduled one an hour ahead), whatever enqueue defaults."""
    rows = db.execute(
        "INSERT INTO pgqueue.jobs (task, queue, state, run_at)"
        " SELECT %s, %s, %s, now() + CASE WHEN %s = 'scheduled' THEN interval '1 hour'"
        " ELSE interval '0' END FROM generate_series(1, %s) RETURNING id",
        [task, queue, state, state, count],
    ).fetchall()
    return [int(r[0]) for r in rows]


def _run(db: Any, ids: list[int]) -> None:
    """Make these jobs `running`, as a worker's claim would."""
    db.execute(
        "UPDATE pgqueue.jobs SET state = 'running', attempt = 1, started_at = now()"
        " WHERE id = ANY(%s)",
        [ids],
    )


def _fail(db: Any, queue: str, count: int, age: str = "1 minute") -> list[int]:
    rows = db.execute(
        "INSERT INTO pgqueue.jobs (task, queue, state, attempt, max_attempts, finished_at)"
        " SELECT 'x.y', %s, 'failed', 3, 3, now() - %s::interval"
        " FROM generate_series(1, %s) RETURNING id",
        [queue, age, count],
    ).fetchall()
    return [int(r[0]) for r in rows]


# --- cancel by filter ------------------------------------------------------------------------


def test_cancel_by_queue_counts_asks_and_reports(
    app: pgqueue.App, dsn: str, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    crm = _jobs(db, "crm", 4)
    _jobs(db, "crm", 1, state="scheduled")
    _run(db, crm[:1])
    _jobs(db, "emails", 3)
    monkeypatch.setattr(cli_main, "_interactive", lambda: True)

    no = runner.invoke(cli, ["cancel", "--queue", "crm", "--dsn", dsn], input="n\n")
    assert no.exit_code == 1, no.output
    assert "this would cancel 5 unfinished job(s) (queue crm), 1 of them running" in no.stderr
    assert "not confirmed: nothing cancelled" in no.stderr
    assert _states(db, "crm") == {"available": 3, "scheduled": 1, "running": 1}

    yes = runner.invoke(cli, ["cancel", "--queue", "crm", "--dsn", dsn], input="y\n")
    assert yes.exit_code == 0, yes.output
    assert "cancelled 5 job(s) (queue crm)" in yes.stdout
    assert "1 of them running, asked to stop" in yes.stdout and "heartbeat" in yes.stdout
    assert _states(db, "crm") == {"cancelled": 4, "running": 1}
    assert db.execute(
        "SELECT cancel_requested FROM pgqueue.jobs WHERE id = %s", [crm[0]]
    ).fetchone() == (True,)
    assert _states(db, "emails") == {"available": 3}  # another queue: untouched


def test_cancel_by_filter_needs_yes_when_nobody_can_answer(
    app: pgqueue.App, dsn: str, db: Any
) -> None:
    _jobs(db, "crm", 3)
    refused = runner.invoke(cli, ["cancel", "--queue", "crm", "--dsn", dsn])
    assert refused.exit_code == 1, refused.output
    assert "3 unfinished job(s)" in refused.stderr and "--yes" in refused.stderr
    assert "Aborted" not in refused.output and "Traceback" not in refused.output
    as_json = runner.invoke(cli, ["cancel", "--queue", "crm", "--dsn", dsn, "--json"])
    assert as_json.exit_code == 1 and "--yes" in _json_error(as_json.stderr)["error"]
    assert as_json.stdout == ""
    assert _states(db, "crm") == {"available": 3}

    done = runner.invoke(cli, ["cancel", "--queue", "crm", "-y", "--dsn", dsn, "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout) == {
        "cancelled": 3,
        "running": 0,
        "queue": "crm",
        "task": None,
        "state": None,
    }
    assert _states(db, "crm") == {"cancelled": 3}


def test_cancel_by_task_and_state(app: pgqueue.App, dsn: str, db: Any) -> None:
    waiting = _jobs(db, "crm", 3, task="crm.sync")
    (later,) = _jobs(db, "crm", 1, task="crm.sync", state="scheduled")
    (other,) = _jobs(db, "crm", 1, task="crm.other")
    result = runner.invoke(
        cli,
        ["cancel", "--task", "crm.sync", "--state", "available", "--yes", "--dsn", dsn],
    )
    assert result.exit_code == 0, result.output
    assert "cancelled 3 job(s) (task crm.sync, state available)" in result.stdout
    assert "running" not in result.stdout
    assert {app.get_job(i).state for i in waiting} == {pgqueue.JobState.CANCELLED}
    assert app.get_job(later).state is pgqueue.JobState.SCHEDULED
    assert app.get_job(other).state is pgqueue.JobState.AVAILABLE


def test_cancel_by_filter_with_nothing_matching(app: pgqueue.App, dsn: str, db: Any) -> None:
    _jobs(db, "emails", 1)
    result = runner.invoke(cli, ["cancel", "--queue", "crm", "--dsn", dsn])
    assert result.exit_code == 0, result.output  # nothing to confirm
    assert "no unfinished jobs match (queue crm): nothing cancelled" in result.stdout
    as_json = runner.invoke(cli, ["cancel", "--queue", "crm", "--dsn", dsn, "--json"])
    assert as_json.exit_code == 0 and json.loads(as_json.stdout)["cancelled"] == 0


def test_cancel_usage_errors(app: pgqueue.App, dsn: str, db: Any) -> None:
    (job,) = _jobs(db, "crm", 1)
    cases = [
        (["cancel", "--dsn", dsn], "at least one filter"),  # an unfiltered bulk cancel
        (["cancel", "--yes", "--dsn", dsn], "at least one filter"),
        (["cancel", str(job), "--queue", "crm", "--dsn", dsn], "not both"),
        (["cancel", "--state", "completed", "--yes", "--dsn", dsn], "scheduled"),
    ]
    for args, fragment in cases:
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)
        assert fragment in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        as_json = runner.invoke(cli, [*args, "--json"])
        assert _json_error(as_json.stderr)["code"] == 2, (args, as_json.output)
    assert _states(db, "crm") == {"available": 1}


# --- retry --failed ----------------------------------------------------------------------------


def test_retry_failed_counts_every_failed_job_and_asks(
    app: pgqueue.App, dsn: str, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Failed two hours ago (an outage): queue_stats() counts only the last hour's failures.
    _fail(db, "crm", 3, age="2 hours")
    _fail(db, "crm", 1)
    _fail(db, "emails", 2)
    monkeypatch.setattr(cli_main, "_interactive", lambda: True)

    no = runner.invoke(cli, ["retry", "--failed", "--queue", "crm", "--dsn", dsn], input="n\n")
    assert no.exit_code == 1, no.output
    assert "this would retry 4 failed job(s) (queue crm)" in no.stderr
    assert "not confirmed: nothing retried" in no.stderr
    assert _states(db, "crm") == {"failed": 4}

    yes = runner.invoke(cli, ["retry", "--failed", "-q", "crm", "--dsn", dsn], input="y\n")
    assert yes.exit_code == 0, yes.output
    assert "retrying 4 failed job(s) (queue crm)" in yes.stdout
    assert _states(db, "crm") == {"available": 4}
    assert _states(db, "emails") == {"failed": 2}

    refused = runner.invoke(cli, ["retry", "--failed", "--dsn", dsn, "--json"])
    monkeypatch.setattr(cli_main, "_interactive", lambda: False)
    piped = runner.invoke(cli, ["retry", "--failed", "--dsn", dsn])
    for result in (refused, piped):
        assert result.exit_code == 1, result.output
        assert "2 failed job(s)" in result.stderr and "--yes" in result.stderr
    assert refused.stdout == "" and _json_error(refused.stderr)["code"] == 1
    assert _states(db, "emails") == {"failed": 2}

    done = runner.invoke(cli, ["retry", "--failed", "--yes", "--dsn", dsn, "--json"])
    assert done.exit_code == 0 and json.loads(done.stdout) == {"retried": 2}
    nothing = runner.invoke(cli, ["retry", "--failed", "--dsn", dsn, "--json"])
    assert nothing.exit_code == 0 and json.loads(nothing.stdout) == {"retried": 0}


def test_retry_failed_fresh_gives_a_full_attempt_budget(
    app: pgqueue.App, dsn: str, db: Any
) -> None:
    fresh = _fail(db, "crm", 2)
    again = _fail(db, "emails", 1)
    result = runner.invoke(
        cli, ["retry", "--failed", "--queue", "crm", "--fresh", "--yes", "--dsn", dsn]
    )
    assert result.exit_code == 0, result.output
    assert "retrying 2 failed job(s) (queue crm)" in result.stdout
    for job_id in fresh:
        info = app.get_job(job_id)
        assert (info.state, info.attempt, info.max_attempts) == (
            pgqueue.JobState.AVAILABLE,
            0,
            3,
        )
    plain = runner.invoke(cli, ["retry", "--failed", "--queue", "emails", "-y", "--dsn", dsn])
    assert plain.exit_code == 0, plain.output
    info = app.get_job(again[0])
    assert (info.attempt, info.max_attempts) == (3, 4)  # one more attempt, not a fresh budget


def test_retry_usage_errors(app: pgqueue.App, dsn: str) -> None:
    job = app.enqueue("x.y", {})
    for args, fragment in [
        (["retry", "--dsn", dsn], "--failed"),
        (["retry", str(job.id), "--failed", "--dsn", dsn], "not both"),
        (["retry", str(job.id), "--fresh", "--dsn", dsn], "--fresh go with --failed"),
        (["retry", str(job.id), "--queue", "crm", "--dsn", dsn], "go with --failed"),
    ]:
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)
        assert fragment in result.stderr, (args, result.stderr)
    help_text = runner.invoke(cli, ["retry", "--help"], env={"COLUMNS": "200"}).stdout
    assert "a full attempt budget again (after an outage)" in help_text
