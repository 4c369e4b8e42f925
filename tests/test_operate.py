"""Operating pgqueue: pause, cancel, prune, retention, the stuck-job monitor, and the CLI."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import psycopg
from pgqueue.cli import app as cli
from psycopg import sql
from typer.testing import CliRunner

import pgqueue
from tests.helpers import wait_until, worker_thread

runner = CliRunner()


def test_pause_stops_claims_across_processes_and_resume_restarts(app: pgqueue.App) -> None:
    @app.task(name="op.tick", queue="ticks")
    def tick() -> None: ...

    with worker_thread(app, poll_interval=0.2) as worker:
        tick.enqueue().wait(timeout=5)
        app.pause("ticks")  # another App (a CLI, an operator) would do the same
        paused = tick.enqueue()
        time.sleep(1.0)  # five polls and a NOTIFY: none may claim it
        assert app.get_job(paused.id).state is pgqueue.JobState.AVAILABLE
        assert next(s for s in app.queue_stats() if s.queue == "ticks").paused
        app.resume("ticks")
        paused.wait(timeout=5)
    assert worker.stats["completed"] == 2


def test_cancel_a_running_job(app: pgqueue.App) -> None:
    started = asyncio.Event()

    @app.task(name="op.long")
    async def long() -> None:
        started.set()
        await asyncio.sleep(60)

    job = long.enqueue()
    with worker_thread(app, poll_interval=0.1, heartbeat_interval=0.1, heartbeat_timeout=5):
        wait_until(lambda: app.get_job(job.id).state is pgqueue.JobState.RUNNING, 10, "start")
        assert app.cancel(job.id) is True
        wait_until(lambda: app.get_job(job.id).state is pgqueue.JobState.CANCELLED, 10, "cancelled")
    info = app.get_job(job.id)
    assert info.errors[-1]["kind"] == "cancel"
    assert app.cancel(job.id) is False  # finished: nothing to cancel


def _finish_old(db: psycopg.Connection[Any], ids: list[int], state: str, age: str) -> None:
    db.execute(
        "UPDATE pgqueue.jobs SET state = %s, finished_at = now() - %s::interval WHERE id = ANY(%s)",
        [state, age, ids],
    )


def test_prune_deletes_only_old_finished_jobs(app: pgqueue.App, db: Any) -> None:
    old_done = [j.id for j in app.enqueue_many("x.y", [{}] * 30)]
    old_failed = [j.id for j in app.enqueue_many("x.y", [{}] * 5)]
    recent = [j.id for j in app.enqueue_many("x.y", [{}] * 3)]
    live = [j.id for j in app.enqueue_many("x.y", [{}] * 4)]
    _finish_old(db, old_done, "completed", "3 days")
    _finish_old(db, old_failed, "failed", "3 days")  # failed jobs are kept 14 days
    _finish_old(db, recent, "completed", "1 minute")
    seen: list[int] = []
    assert app.prune(batch=7, progress=seen.append) == 30  # per-state retention
    assert seen[-1] == 30 and len(seen) >= 5  # in batches
    assert app.prune(older_than=86400) == 5  # explicit age: old failures go too
    remaining = {r[0] for r in db.execute("SELECT id FROM pgqueue.jobs").fetchall()}
    assert remaining == set(recent) | set(live)


def test_leader_prunes_by_retention(app: pgqueue.App, db: Any) -> None:
    ids = [j.id for j in app.enqueue_many("x.y", [{}] * 3)]
    _finish_old(db, ids, "completed", "2 days")
    db.execute("UPDATE pgqueue.retention SET keep_for = '1 hour' WHERE state = 'completed'")
    with worker_thread(
        app, poll_interval=0.2, heartbeat_interval=0.1, heartbeat_timeout=2, prune_interval=0.1
    ) as worker:
        wait_until(lambda: worker.stats["pruned"] == 3, 10, "retention")
    assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (0,)


def test_stuck_jobs_view(app: pgqueue.App, db: Any) -> None:
    slow, timed, fine, rescued = (app.enqueue("x.y", {}).id for _ in range(4))
    db.execute(
        "INSERT INTO pgqueue.workers (id, hostname, pid, concurrency, heartbeat_at)"
        " VALUES ('00000000-0000-0000-0000-000000000001', 'gone', 1, 1,"
        " now() - interval '1 hour')"
    )
    db.execute(
        "UPDATE pgqueue.jobs SET state = 'running', attempt = 1,"
        " worker_id = '00000000-0000-0000-0000-000000000001',"
        " started_at = now() - interval '12 minutes' WHERE id = %s",
        [slow],
    )
    db.execute(
        "UPDATE pgqueue.jobs SET state = 'running', attempt = 1, timeout = 30,"
        " started_at = now() - interval '2 minutes' WHERE id = %s",
        [timed],
    )
    db.execute(
        "UPDATE pgqueue.jobs SET state = 'running', attempt = 1,"
        " started_at = now() - interval '1 minute' WHERE id = %s",
        [fine],
    )
    db.execute("UPDATE pgqueue.jobs SET rescue_count = 2 WHERE id = %s", [rescued])
    rows = {r["id"]: r for r in app.stuck_jobs()}
    assert set(rows) == {slow, timed, rescued}
    assert (rows[slow]["bucket"], rows[slow]["worker"], rows[slow]["worker_alive"]) == (
        "over 10 min",
        "gone:1",
        False,
    )
    assert rows[timed]["bucket"] == "over timeout"
    assert rows[rescued]["bucket"] == "rescued 2x"


def test_views_stay_cheap_with_many_finished_jobs(app: pgqueue.App, db: Any) -> None:
    db.execute(
        "INSERT INTO pgqueue.jobs (task, state, finished_at, created_at)"
        " SELECT 't', 'completed', now() - interval '2 hours', now() - interval '2 hours'"
        " FROM generate_series(1, 200000)"
    )
    app.enqueue_many("x.y", [{}] * 20)
    db.execute("ANALYZE pgqueue.jobs")
    for view in ("queue_stats", "stuck_jobs"):
        query = sql.SQL("EXPLAIN SELECT * FROM pgqueue.{}").format(sql.Identifier(view))
        plan = "\n".join(r[0] for r in db.execute(query))
        assert "Seq Scan on jobs" not in plan, plan
    stats = {s.queue: s for s in app.queue_stats()}
    assert stats["default"].available == 20


def test_cli_operator_commands(app: pgqueue.App, dsn: str, db: Any) -> None:
    @app.task(name="op.fail", max_attempts=1)
    def boom() -> None:
        raise RuntimeError("nope")

    failed = boom.enqueue()
    with worker_thread(app, burst=True):
        pass
    listed = runner.invoke(cli, ["jobs", "--dsn", dsn, "--state", "failed", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [r["id"] for r in json.loads(listed.output)] == [failed.id]
    table = runner.invoke(cli, ["jobs", "--dsn", dsn, "--task", "op.fail"])
    assert "RuntimeError" in table.output and "nope" in table.output
    bad = runner.invoke(cli, ["jobs", "--dsn", dsn, "--state", "exploded"])
    assert bad.exit_code == 1 and "exploded" in bad.output

    again = runner.invoke(cli, ["retry", "--failed", "--yes", "--dsn", dsn, "--json"])
    assert again.exit_code == 0 and json.loads(again.output) == {"retried": 1}
    shown = runner.invoke(cli, ["job", str(failed.id), "--dsn", dsn])
    assert "Traceback" in shown.output and 'raise RuntimeError("nope")' in shown.output
    assert app.get_job(failed.id).state is pgqueue.JobState.AVAILABLE
    assert runner.invoke(cli, ["retry", "--dsn", dsn]).exit_code == 2

    paused = runner.invoke(cli, ["pause", "default", "--dsn", dsn, "--json"])
    assert json.loads(paused.output) == {"queue": "default", "paused": True}
    status = runner.invoke(cli, ["status", "--dsn", dsn])
    assert "queue default is paused" in status.output
    assert runner.invoke(cli, ["resume", "default", "--dsn", dsn]).exit_code == 0

    old = app.enqueue("x.y", {})
    _finish_old(db, [old.id], "completed", "30 days")
    pruned = runner.invoke(cli, ["prune", "--older-than", "7d", "--dsn", dsn])
    assert pruned.exit_code == 0 and "deleted 1 finished job" in pruned.output
    bad_age = runner.invoke(cli, ["prune", "--older-than", "soon", "--dsn", dsn])
    assert bad_age.exit_code == 2


def test_top_renders_one_frame(app: pgqueue.App, dsn: str, db: Any) -> None:
    @app.task(name="op.ok")
    def ok() -> None: ...

    @app.task(name="op.bad", max_attempts=1)
    def bad() -> None:
        raise ValueError("broken widget")

    ok.enqueue_many({} for _ in range(5))
    bad.enqueue()
    with worker_thread(app, burst=True):
        pass
    frame = runner.invoke(cli, ["top", "--once", "--dsn", dsn])
    assert frame.exit_code == 0, frame.output
    for text in (
        "pgqueue top",
        "queues",
        "throughput",
        "workers",
        "recent failures",
        "broken widget",
    ):
        assert text in frame.output, text
