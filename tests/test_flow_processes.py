"""Flow control across real worker processes (issue 12): each limit is checked from a ledger
the tasks write on their own connections (tests/apps/flow.py), never from pgqueue's rows
alone: how many ran at once, how many started in any window."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

import pgqueue
from cli.main import app as cli
from tests.helpers import ROOT, WorkerProcess, spawn_worker, started_workers, wait_until

WORKER = "tests.apps.flow:app"
#: tests/apps/flow.py's ledger (not imported here: its App reads PGQUEUE_DSN at import).
LEDGER = """CREATE TABLE flow_ledger (
    job_id bigint NOT NULL, attempt int NOT NULL, grp text, pid int NOT NULL,
    started timestamptz NOT NULL, ended timestamptz)"""
FAST = ("--poll-interval", "0.5", "--heartbeat-interval", "0.2", "--heartbeat-timeout", "1")


def _stop(procs: list[WorkerProcess]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def _peak(db: Any, where: str = "true") -> int:
    """The most runs of the ledger that overlapped at any instant (start/end events)."""
    row = db.execute(
        f"""SELECT coalesce(max(n), 0) FROM (
              SELECT sum(d) OVER (ORDER BY at, d) AS n FROM (
                SELECT started AS at, 1 AS d FROM flow_ledger WHERE {where}
                UNION ALL
                SELECT coalesce(ended, 'infinity'), -1 FROM flow_ledger WHERE {where}) e) s"""  # noqa: S608
    ).fetchone()
    return int(row[0])


def _peak_per_group(db: Any) -> int:
    groups = [g for (g,) in db.execute("SELECT DISTINCT grp FROM flow_ledger").fetchall()]
    return max(_peak(db, f"grp = '{g}'") for g in groups)


def _max_starts(db: Any, column: str, table: str, window: float, where: str = "true") -> int:
    """The most starts in any closed window of `window` seconds, from `column`."""
    row = db.execute(
        f"""SELECT coalesce(max(n), 0) FROM (
              SELECT count(*) OVER (ORDER BY {column}
                                    RANGE BETWEEN CURRENT ROW AND %s FOLLOWING) AS n
                FROM {table} WHERE {column} IS NOT NULL AND {where}) s""",  # noqa: S608
        [timedelta(seconds=window)],
    ).fetchone()
    return int(row[0])


def test_concurrency_limits_hold_across_three_processes(dsn: str, db: Any) -> None:
    db.execute(LEDGER)
    app = pgqueue.App(dsn)
    app.configure_queue("flow", concurrency=4, group_concurrency=1)
    procs = [spawn_worker(WORKER, dsn, "-c", "4", *FAST) for _ in range(3)]
    try:
        # Every worker is up and claiming before the jobs arrive, so all three compete.
        wait_until(lambda: started_workers(db) == 3, 60, "three started workers")
        for g in "abcdef":
            app.enqueue_many(
                "flow.work", [{"seconds": 0.25, "grp": g}] * 5, group_key=g, queue="flow"
            )
        wait_until(lambda: app.count_unfinished(queue="flow") == 0, 120, "the queue to drain")
    finally:
        _stop(procs)
    runs, pids = db.execute("SELECT count(*), count(DISTINCT pid) FROM flow_ledger").fetchone()
    assert runs == 30 and pids >= 2
    assert _peak(db) <= 4
    assert _peak_per_group(db) <= 1
    assert _peak(db) >= 3  # the limit, not the test, bounded it


def test_a_killed_workers_slots_come_back_at_rescue_not_before(dsn: str, db: Any) -> None:
    db.execute(LEDGER)
    app = pgqueue.App(dsn)
    app.configure_queue("flow", concurrency=2)
    # Long on their first attempt (the one the killed worker runs), short when rescued.
    long = app.enqueue_many("flow.work", [{"first_seconds": 60, "seconds": 0}] * 2, queue="flow")
    victim = spawn_worker(WORKER, dsn, "-c", "2", *FAST)
    try:
        wait_until(
            lambda: db.execute("SELECT count(*) FROM flow_ledger").fetchone()[0] == 2,
            30,
            "the victim to start both",
        )
        short = app.enqueue_many("flow.work", [{"seconds": 0}] * 3, queue="flow")
        survivor = spawn_worker(WORKER, dsn, "-c", "4", *FAST)
        time.sleep(1.5)  # the survivor is up and claiming: the slots are held
        assert db.execute("SELECT count(*) FROM flow_ledger").fetchone()[0] == 2
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        killed_at = db.execute("SELECT clock_timestamp()").fetchone()[0]
        wait_until(
            lambda: all(app.get_job(j.id).state == "completed" for j in [*long, *short]),
            60,
            "rescue and the rest to run",
        )
    finally:
        _stop([victim, locals().get("survivor") or victim])
    later = db.execute(
        "SELECT min(started) FROM flow_ledger WHERE job_id <> ALL(%s) OR attempt > 1",
        [[j.id for j in long]],
    ).fetchone()[0]
    assert later > killed_at  # nothing started while the dead worker's slots were held
    assert _peak(db, "ended IS NOT NULL") <= 2


def test_rate_limits_hold_across_two_processes(dsn: str, db: Any) -> None:
    db.execute(LEDGER)
    app = pgqueue.App(dsn)
    app.configure_queue("flow", rate="10/s", group_rate="3/s")
    app.enqueue_many("flow.work", [{"grp": "hot"}] * 12, group_key="hot", queue="flow")
    app.enqueue_many("flow.work", [{"grp": None}] * 18, queue="flow")
    procs = [spawn_worker(WORKER, dsn, "-c", "8", "--burst", *FAST) for _ in range(2)]
    started = time.monotonic()
    try:
        wait_until(lambda: app.count_unfinished(queue="flow") == 0, 60, "the queue to drain")
    finally:
        _stop(procs)
    took = time.monotonic() - started
    # From the claim's own clock: never more than N in any window of the period.
    assert _max_starts(db, "started_at", "pgqueue.jobs", 1.0) <= 10
    assert _max_starts(db, "started_at", "pgqueue.jobs", 1.0, "group_key = 'hot'") <= 3
    # From the tasks' ledger, allowing for the claim-to-start latency of each run.
    assert _max_starts(db, "started", "flow_ledger", 0.8) <= 10
    assert _max_starts(db, "started", "flow_ledger", 0.8, "grp = 'hot'") <= 3
    # 12 hot jobs at 3/s need about 3 s (the first 3 at once); the queue at 10/s about 2 s.
    assert took >= 2.9


@pytest.mark.slow
def test_held_back_workers_sleep_instead_of_polling(dsn: str, db: Any) -> None:
    app = pgqueue.App(dsn)
    app.configure_queue("flow", rate="1/5s")
    app.enqueue_many("flow.work", [{}] * 3, queue="flow")
    db.execute(LEDGER)
    # Count the worker's calls of claim_limited (its sessions read the database's setting).
    db.execute(f"ALTER DATABASE {db.info.dbname} SET track_functions = 'pl'")
    proc = spawn_worker(WORKER, dsn, "-c", "4", "--poll-interval", "2")

    def calls_now() -> Any:
        return db.execute(
            "SELECT calls FROM pg_stat_user_functions WHERE funcname = 'claim_limited'"
        ).fetchone()

    try:
        wait_until(lambda: app.count_unfinished(queue="flow") <= 2, 30, "the first start")
        wait_until(lambda: (calls_now() or (0,))[0] > 0, 10, "function statistics")
        calls = calls_now()
        time.sleep(3)
        time.sleep(1.1)  # statistics are flushed about once a second
        after = calls_now()
    finally:
        _stop([proc])
    # Held back for 5 s by the rate: it sleeps until the next permitted start (or the
    # 2 s poll), not a claim per loop turn: a handful of calls in 4 s, not thousands.
    assert calls is not None and after is not None
    assert after[0] - calls[0] <= 6, (calls, after)


def test_a_settings_change_takes_effect_within_a_second(dsn: str, db: Any) -> None:
    db.execute(LEDGER)
    app = pgqueue.App(dsn)
    app.configure_queue("flow", concurrency=1)
    app.enqueue_many("flow.work", [{"seconds": 0.3}] * 30, queue="flow")
    procs = [spawn_worker(WORKER, dsn, "-c", "4", *FAST) for _ in range(2)]
    try:
        wait_until(
            lambda: db.execute("SELECT count(*) FROM flow_ledger").fetchone()[0] >= 2,
            30,
            "a couple of runs at concurrency 1",
        )
        assert _peak(db) == 1
        changed = db.execute("SELECT clock_timestamp()").fetchone()[0]
        app.configure_queue("flow", concurrency=6)
        wait_until(
            lambda: _peak(db, f"ended IS NULL OR ended > {_lit(changed)}") >= 5,
            10,
            "more runs at once",
        )
        first_wide = db.execute(
            """SELECT min(started) FROM flow_ledger AS a
                WHERE (SELECT count(*) FROM flow_ledger AS b
                        WHERE b.started <= a.started
                          AND (b.ended IS NULL OR b.ended > a.started)) >= 3"""
        ).fetchone()[0]
        # The running job (0.3 s) finishes meanwhile; the new limit is read by the next claim.
        assert (first_wide - changed).total_seconds() < 1.0
        app.configure_queue("flow", concurrency=None, max_depth=None)
    finally:
        _stop(procs)
    assert _peak(db) <= 6


def _lit(value: Any) -> str:
    return "'" + str(value) + "'::timestamptz"


def test_status_warns_about_a_queue_no_live_worker_serves(dsn: str, db: Any) -> None:
    app = pgqueue.App(dsn)
    app.enqueue("flow.work", {}, queue="orphaned")
    app.enqueue("flow.work", {}, queue="other", delay=3600)  # served, and not due
    proc = spawn_worker(WORKER, dsn, "-q", "other", *FAST)
    runner = CliRunner()
    env = {"PGQUEUE_DSN": dsn}
    try:
        wait_until(lambda: any(w["alive"] for w in app.workers()), 30, "the worker to register")
        result = runner.invoke(cli, ["status"], env=env)
        assert result.exit_code == 0, result.output
        assert "queue orphaned has 1 job(s) waiting and no live worker serving it" in (
            " ".join(result.stdout.split())
        )
        assert "queue other" not in result.stdout.split("warning")[-1]
        stats = {s.queue: s for s in app.queue_stats()}
        assert (stats["orphaned"].live_workers, stats["other"].live_workers) == (0, 1)
    finally:
        _stop([proc])


def test_cli_queue_shows_and_sets(dsn: str) -> None:
    runner = CliRunner()
    env = {"PGQUEUE_DSN": dsn}
    result = runner.invoke(
        cli, ["queue", "exports", "--concurrency", "5", "--rate", "20/s", "--fair"], env=env
    )
    assert result.exit_code == 0, result.output
    assert "20/s" in result.stdout
    result = runner.invoke(cli, ["queue", "exports", "--clear", "rate", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert '"rate": null' in result.stdout and '"concurrency": 5' in result.stdout
    for bad in (["--rate", "20/x"], ["--concurrency", "0"], ["--max-depth", "-1"]):
        result = runner.invoke(cli, ["queue", "exports", *bad], env=env)
        assert result.exit_code == 2, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    result = runner.invoke(cli, ["queue", "bad name", "--concurrency", "1"], env=env)
    assert result.exit_code == 2
    settings = pgqueue.App(dsn).queue_settings("exports")
    assert (settings.concurrency, settings.rate, settings.fair) == (5, None, True)


def test_pgqueue_jobs_filters_by_group(dsn: str) -> None:
    app = pgqueue.App(dsn)
    app.enqueue("flow.work", {}, group_key="acme")
    app.enqueue("flow.work", {}, group_key="other")
    result = CliRunner().invoke(
        cli, ["jobs", "--group", "acme", "--json"], env={"PGQUEUE_DSN": dsn}
    )
    assert result.exit_code == 0, result.output
    assert '"acme"' in result.stdout and '"other"' not in result.stdout
    assert os.environ.get("PGQUEUE_DSN") != "x"


@pytest.mark.slow
def test_the_docs_example_runs(dsn: str) -> None:
    """docs/examples/per_customer_api.py, as the guide tells a reader to run it."""
    env = {**os.environ, "PGQUEUE_DSN": dsn, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "docs/examples/per_customer_api.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "most calls in flight for one customer: 2 (limit 2)" in proc.stdout
    lines = dict(
        line.split(": last export at +")
        for line in proc.stdout.splitlines()
        if "last export" in line
    )
    assert float(lines["big-customer".rjust(13)].rstrip(" s")) > max(
        float(v.rstrip(" s")) for k, v in lines.items() if "big" not in k
    )
