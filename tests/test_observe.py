"""Metrics, structured logs and redaction."""

from __future__ import annotations

import json
import logging
import socket
import urllib.request

import pytest

import pgqueue
from pgqueue._logging import redact
from tests.helpers import wait_until, worker_thread


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_worker_serves_prometheus_metrics(app: pgqueue.App) -> None:
    @app.task(name="obs.ok", queue="mail")
    def ok() -> None: ...

    @app.task(name="obs.bad", queue="mail", max_attempts=1)
    def bad() -> None:
        raise RuntimeError("x")

    ok.enqueue_many({} for _ in range(3))
    bad.enqueue()
    app.enqueue("obs.later", {}, queue="mail", delay=3600)
    port = _free_port()
    with worker_thread(
        app,
        poll_interval=0.1,
        heartbeat_interval=0.1,
        heartbeat_timeout=2,
        metrics_port=port,
        metrics_addr="127.0.0.1",
    ) as worker:
        wait_until(
            lambda: worker.stats["completed"] == 3 and worker.stats["failed"] == 1, 10, "jobs"
        )

        def scrape() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                return str(r.read().decode())

        wait_until(
            lambda: 'pgqueue_queue_depth{queue="mail",state="scheduled"} 1.0' in scrape(),
            10,
            "queue gauges",
        )
        text = scrape()
    assert 'pgqueue_jobs_completed_total{queue="mail",task="obs.ok"} 3.0' in text
    assert 'pgqueue_jobs_failed_total{queue="mail",task="obs.bad"} 1.0' in text
    assert 'pgqueue_job_duration_seconds_count{queue="mail",task="obs.ok"} 3.0' in text
    assert "pgqueue_queue_lag_seconds" in text


def test_job_log_lines_name_the_job(app: pgqueue.App, caplog: pytest.LogCaptureFixture) -> None:
    @app.task(name="obs.fail", queue="q1", max_attempts=1)
    def fail() -> None:
        raise ValueError("bad")

    job = fail.enqueue()
    with caplog.at_level(logging.DEBUG, logger="pgqueue"), worker_thread(app, burst=True):
        pass
    records = [r for r in caplog.records if getattr(r, "job_id", None) == job.id]
    assert {r.levelname for r in records} >= {"DEBUG", "WARNING"}
    for r in records:
        assert (r.task, r.queue, r.attempt) == ("obs.fail", "q1", 1)  # type: ignore[attr-defined]
    line = json.loads(pgqueue.JsonFormatter().format(records[-1]))
    assert (line["job_id"], line["task"], line["queue"], line["attempt"]) == (
        job.id,
        "obs.fail",
        "q1",
        1,
    )
    assert line["level"] == "WARNING" and "bad" in line["message"]


def test_redaction_masks_secrets_in_logs_and_cli(
    app: pgqueue.App, dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    from pgqueue.cli import app as cli
    from typer.testing import CliRunner

    assert redact(
        {"a": 1, "Token": "t", "nested": [{"password": "p"}]}, frozenset({"token", "password"})
    ) == {"a": 1, "Token": "***", "nested": [{"password": "***"}]}

    @app.task(name="obs.login")
    def login(user: str, password: str) -> None: ...

    job = login.enqueue(user="ann", password="hunter2")
    with caplog.at_level(logging.DEBUG, logger="pgqueue"), worker_thread(app, burst=True):
        pass
    assert "hunter2" not in caplog.text and "ann" in caplog.text
    shown = CliRunner().invoke(cli, ["job", str(job.id), "--dsn", dsn, "--json"])
    assert json.loads(shown.output)["args"] == {"user": "ann", "password": "***"}
    custom = pgqueue.App(dsn, redact_keys=["user"])
    assert custom.redact({"user": "ann", "password": "x"}) == {"user": "***", "password": "x"}


def test_metrics_without_the_client_library_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    from pgqueue._metrics import Metrics

    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    with pytest.raises(pgqueue.ConfigurationError, match=r"pgqueue\[metrics\]"):
        Metrics(_free_port())
