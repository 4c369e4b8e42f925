"""Schedules against a real PostgreSQL: exactly one job per slot however many workers and
leaders, across restarts and after pruning; catch-up after a downtime; a schedule fires
only while a live worker declares it; pause and resume; bad input."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

import pgqueue
from cli.main import app as cli
from pgqueue import Worker
from pgqueue._core import schedules as plans
from pgqueue.errors import ValidationError
from tests.helpers import spawn_worker, wait_until, worker_thread

Conn = psycopg.Connection[tuple[Any, ...]]
FAST = {"heartbeat_interval": 0.2, "heartbeat_timeout": 1.0, "handle_signals": False}


@asynccontextmanager
async def declared(app: pgqueue.App) -> AsyncIterator[Worker]:
    """A worker that has started as far as declaring its schedules (registered, live), whose
    scheduler the test runs pass by pass instead of on its timer."""
    worker = app.worker(**FAST)
    await worker.db.open()
    try:
        await worker.heartbeat.register()
        await worker.announce()
        yield worker
    finally:
        await worker.heartbeat.deregister()
        await worker.db.run(plans.undeclare(worker.id))
        await worker.db.close()


def _slots(db: Conn, name: str) -> list[Any]:
    rows = db.execute(
        "SELECT scheduled_for FROM pgqueue.job_status WHERE schedule = %s ORDER BY scheduled_for",
        [name],
    ).fetchall()
    return [r[0] for r in rows]


def _back(db: Conn, name: str, seconds: float) -> None:
    """Simulate a downtime: the schedule's last slot was `seconds` ago."""
    db.execute(
        "UPDATE pgqueue.cron_schedules SET last_slot = now() - make_interval(secs => %s),"
        " next_run_at = NULL WHERE name = %s",
        [seconds, name],
    )


def test_scheduled_jobs_run_and_know_their_slot(app: pgqueue.App, db: Conn) -> None:
    seen: list[Any] = []

    @app.task
    def tick(region: str) -> None:
        seen.append((region, pgqueue.current_job().scheduled_for))

    app.periodic(tick, "* * * * * *", name="ticker", args={"region": "eu"})
    with worker_thread(app, **FAST):
        wait_until(lambda: len(seen) >= 3, 15, "three scheduled runs")
        [row] = app.schedules()
    assert row["name"] == "ticker" and row["task"] == tick.name and row["tz"] == "UTC"
    assert row["declared_by_live_workers"] == 1 and not row["paused"]
    assert row["next_run_at"] > row["last_slot"]
    status = db.execute(
        "SELECT id, schedule, scheduled_for FROM pgqueue.job_status"
        " WHERE schedule = 'ticker' ORDER BY id"
    ).fetchall()
    # each run saw its own job's slot, as job_status records it
    assert {slot for _, slot in seen} <= {s for _, _, s in status}
    assert all(region == "eu" for region, _ in seen)
    assert len({s for _, _, s in status}) == len(status)  # one job per slot
    assert row["last_job_id"] in {i for i, _, _ in status}
    assert app.schedules()[0]["declared_by_live_workers"] == 0  # the worker stopped


@pytest.mark.parametrize(
    ("catch_up", "expected"),
    [("latest", 1), ("all", 5), ("none", 0)],
)
def test_catch_up_after_a_downtime(
    app: pgqueue.App, db: Conn, catch_up: str, expected: int
) -> None:
    app.periodic("reports.hourly", "0 * * * *", name="hourly", catch_up=catch_up)

    async def scenario() -> None:
        async with declared(app) as worker:
            # down for five hours and a bit: five hourly slots were missed
            now = db.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
            since = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=5)
            db.execute(
                "UPDATE pgqueue.cron_schedules SET last_slot = %s WHERE name = 'hourly'",
                [since + timedelta(seconds=1)],
            )
            await worker.scheduler.run_once()
            await worker.scheduler.run_once()  # a second pass adds nothing

    asyncio.run(scenario())
    slots = _slots(db, "hourly")
    assert len(slots) == expected
    if slots:
        assert slots[-1].minute == 0 and len(set(slots)) == len(slots)
    [row] = app.schedules()
    assert row["next_run_at"] is not None and row["next_run_at"].minute == 0


def test_two_leaders_at_once_a_restart_and_a_prune_never_repeat_a_slot(
    app: pgqueue.App, db: Conn
) -> None:
    app.periodic("sync.prices", "* * * * *", name="prices", catch_up="all")

    async def scenario() -> tuple[list[Any], list[Any]]:
        async with declared(app) as first, declared(app) as second:
            # a downtime of exactly thirty minute slots (thirty-one if a minute turns during
            # the passes)
            db.execute(
                "UPDATE pgqueue.cron_schedules"
                " SET last_slot = date_trunc('minute', now()) - interval '30 minutes'"
            )
            for _ in range(5):  # both fire the same missed slots at the same moment
                await asyncio.gather(first.scheduler.run_once(), second.scheduler.run_once())
        fired = _slots(db, "prices")
        # every job finished and was pruned; a worker started afresh fires nothing again
        db.execute("DELETE FROM pgqueue.jobs")
        async with declared(app) as restarted:
            await restarted.scheduler.run_once()
        return fired, _slots(db, "prices")

    fired, after = asyncio.run(scenario())
    assert len(fired) in (30, 31) and len(set(fired)) == len(fired)
    assert all(b - a == timedelta(minutes=1) for a, b in itertools.pairwise(fired))
    assert all(slot > fired[-1] for slot in after)  # at most a minute that turned meanwhile
    [row] = app.schedules()
    if not after:
        assert row["last_job_state"] is None and row["last_job_id"] is not None  # pruned


def test_a_schedule_no_live_worker_declares_stops(app: pgqueue.App, db: Conn) -> None:
    app.periodic("sync.prices", "* * * * * *", name="prices", catch_up="all")
    other = pgqueue.App(app.dsn)  # the new code: the schedule was removed from it

    async def scenario() -> None:
        async with declared(app) as old:
            _back(db, "prices", 3)
            await old.scheduler.run_once()
        fired = len(_slots(db, "prices"))
        assert fired >= 3
        async with declared(other) as new:  # the only live worker no longer declares it
            _back(db, "prices", 10)
            await new.scheduler.run_once()
            assert len(_slots(db, "prices")) == fired
            assert app.schedules()[0]["declared_by_live_workers"] == 0
        # a worker that declares it but stopped heartbeating (killed) does not count either
        async with declared(app) as crashed:
            db.execute(
                "UPDATE pgqueue.workers SET heartbeat_at = now() - interval '1 hour' WHERE id = %s",
                [crashed.id],
            )
            _back(db, "prices", 10)
            await crashed.scheduler.run_once()
            assert len(_slots(db, "prices")) == fired

    asyncio.run(scenario())
    other.close()


def test_pause_and_resume(app: pgqueue.App, db: Conn) -> None:
    app.periodic("sync.prices", "* * * * * *", name="prices", catch_up="all")

    async def scenario() -> None:
        async with declared(app) as worker:
            app.pause_schedule("prices")
            _back(db, "prices", 5)
            await worker.scheduler.run_once()
            assert _slots(db, "prices") == []
            assert app.schedules()[0]["paused"] is True
            resumed_at = db.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
            await app.resume_schedule_async("prices")
            await worker.scheduler.run_once()
            # resuming skips what passed while paused: only slots after the resume
            assert all(slot > resumed_at for slot in _slots(db, "prices"))
            await app.pause_schedule_async("prices")
            app.resume_schedule("prices")

    asyncio.run(scenario())
    with pytest.raises(ValidationError, match="no schedule named 'nope'"):
        app.pause_schedule("nope")
    assert asyncio.run(app.schedules_async())[0]["paused"] is False


def test_cli_lists_pauses_and_resumes(app: pgqueue.App, dsn: str) -> None:
    app.periodic("sync.prices", "*/5 * * * *", name="prices", tz="Europe/Copenhagen")

    async def scenario() -> None:
        async with declared(app):
            pass

    asyncio.run(scenario())
    runner = CliRunner()
    result = runner.invoke(cli, ["schedules", "--dsn", dsn])
    assert (
        result.exit_code == 0 and "prices" in result.output and "Europe/Copenhagen" in result.output
    )
    result = runner.invoke(cli, ["schedule", "pause", "prices", "--dsn", dsn])
    assert result.exit_code == 0 and "paused" in result.output
    result = runner.invoke(cli, ["schedules", "--json", "--dsn", dsn])
    assert '"paused": true' in result.output
    result = runner.invoke(cli, ["schedule", "resume", "prices", "--dsn", dsn])
    assert result.exit_code == 0
    result = runner.invoke(cli, ["schedule", "pause", "nope", "--dsn", dsn])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: no schedule named 'nope' (see `pgqueue schedules`)"
    ]
    result = runner.invoke(cli, ["topics", "--json", "--dsn", dsn])
    assert result.exit_code == 0 and '"subscriptions": []' in result.output


def test_bad_declarations_are_refused_and_nothing_is_written(app: pgqueue.App, db: Conn) -> None:
    @app.task
    def report(day: str) -> None: ...

    ok = {"day": "today"}
    for kwargs, message in [
        ({"cron": "0 25 * * *", "args": ok}, "invalid cron expression '0 25 \\* \\* \\*'"),
        ({"cron": "0 3 * * *", "tz": "Mars/Base", "args": ok}, "unknown time zone 'Mars/Base'"),
        ({"cron": "0 3 * * *", "catch_up": "sometimes", "args": ok}, "unknown catch_up"),
        ({"cron": "0 3 * * *", "name": "no spaces", "args": ok}, "invalid schedule name"),
        ({"cron": "0 3 * * *", "args": {"day": "x", "month": 1}}, "unexpected keyword"),
        ({"cron": "0 3 * * *"}, "missing a required argument: 'day'"),
    ]:
        with pytest.raises((ValidationError, TypeError), match=message):
            app.periodic(report, **kwargs)  # type: ignore[arg-type]
    app.periodic(report, "0 3 * * *", args={"day": "today"})
    with pytest.raises(ValidationError, match="already declared with other settings"):
        app.periodic(report, "0 4 * * *", args={"day": "today"})
    with pytest.raises(ValidationError, match="already declared for task"):
        app.periodic("other.task", "0 3 * * *", name=report.name)
    assert list(app.declared_schedules) == [report.name]
    row = db.execute("SELECT count(*) FROM pgqueue.cron_schedules").fetchone()
    assert row == (0,)  # declarations are written by a worker at start


def test_a_name_clash_across_processes_stops_the_second_worker(app: pgqueue.App, db: Conn) -> None:
    app.periodic("reports.a", "0 3 * * *", name="nightly")
    rival = pgqueue.App(app.dsn)
    rival.periodic("reports.b", "0 3 * * *", name="nightly")

    async def scenario() -> None:
        async with declared(app):
            with pytest.raises(ValidationError, match=r"declared for task 'reports\.a'"):
                async with declared(rival):
                    pass
        # once no live worker declares it, the new code takes the name over
        async with declared(rival):
            pass

    asyncio.run(scenario())
    row = db.execute("SELECT task FROM pgqueue.cron_schedules WHERE name = 'nightly'").fetchone()
    assert row == ("reports.b",)
    rival.close()


def test_a_changed_expression_does_not_fire_a_burst(app: pgqueue.App, db: Conn) -> None:
    app.periodic("sync.prices", "0 0 1 1 *", name="prices", catch_up="all")
    changed = pgqueue.App(app.dsn)
    changed.periodic("sync.prices", "* * * * * *", name="prices", catch_up="all")

    async def scenario() -> None:
        async with declared(app):
            _back(db, "prices", 3600)  # an hour since the last slot...
        async with declared(changed) as worker:  # ...then the expression changes
            await worker.scheduler.run_once()

    asyncio.run(scenario())
    assert len(_slots(db, "prices")) <= 1  # not the 3,600 "missed" seconds
    changed.close()


# --- many worker processes, leadership moving -----------------------------------------------


def _leader_pid(db: Conn) -> int | None:
    row = db.execute(
        "SELECT w.pid FROM pgqueue.leaders AS l JOIN pgqueue.workers AS w ON w.id = l.worker_id"
        " WHERE l.expires_at > now()"
    ).fetchone()
    return None if row is None else int(row[0])


def _fleet_run(dsn: str, db: Conn, schedules: dict[str, str], seconds: float, moves: int) -> None:
    """4 worker processes declaring `schedules` for `seconds`; `moves` times the leader is
    frozen (SIGSTOP) past its lease, so another takes over, and then thawed while it still
    believes it leads (two leaders overlap). Checks one job per slot, no slot missing."""
    db.execute(
        "CREATE TABLE public.slot_runs (job_id bigint, schedule text, slot timestamptz, pid int)"
    )
    os.environ["PGQUEUE_TEST_SCHEDULES"] = ";".join(f"{n}={c}" for n, c in schedules.items())
    args = ["-c", "4", "--heartbeat-interval", "0.2", "--heartbeat-timeout", "1"]
    try:
        procs = [spawn_worker("tests.apps.scheduled:app", dsn, *args) for _ in range(4)]
    finally:
        del os.environ["PGQUEUE_TEST_SCHEDULES"]
    leaders: list[int] = []
    try:
        wait_until(lambda: _leader_pid(db) is not None, 30, "a leader")
        start = time.monotonic()
        for move in range(moves):
            time.sleep(max(0.0, start + seconds * (move + 1) / (moves + 1) - time.monotonic()))
            pid = _leader_pid(db)
            assert pid is not None
            leaders.append(pid)
            os.kill(pid, signal.SIGSTOP)
            try:
                wait_until(lambda p=pid: _leader_pid(db) not in (None, p), 15, "a new leader")
            finally:
                os.kill(pid, signal.SIGCONT)  # it wakes up believing it still leads
        time.sleep(max(0.0, start + seconds - time.monotonic()))
        leaders.append(_leader_pid(db) or 0)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.communicate(timeout=30)
    assert len(set(leaders)) >= 2 and len(leaders) == moves + 1
    for name in schedules:
        slots = _slots(db, name)
        assert len(slots) >= 2, name
        assert len(set(slots)) == len(slots), f"{name}: a slot made two jobs"
        step = min(b - a for a, b in itertools.pairwise(slots))
        assert all(b - a == step for a, b in itertools.pairwise(slots)), (
            f"{name}: a slot was missed: {slots}"
        )


def test_four_workers_and_a_moving_leader_make_one_job_per_slot(dsn: str, db: Conn) -> None:
    _fleet_run(dsn, db, {"every-second": "* * * * * *"}, seconds=12, moves=2)


@pytest.mark.slow
def test_three_minutes_of_minutely_and_five_second_slots_with_two_leader_changes(
    dsn: str, db: Conn
) -> None:
    _fleet_run(
        dsn,
        db,
        {"minutely": "* * * * *", "every-5s": "*/5 * * * * *"},
        seconds=180,
        moves=2,
    )


def test_get_job_and_the_cli_show_where_a_job_came_from(app: pgqueue.App, dsn: str) -> None:
    app.subscribe("orders.*", "audit.record")
    [job] = app.publish("orders.created", {"n": 1})
    info = app.get_job(job.id)
    assert (info.topic, info.schedule, info.scheduled_for) == ("orders.created", None, None)
    result = CliRunner().invoke(cli, ["job", str(job.id), "--dsn", dsn])
    assert result.exit_code == 0 and "orders.created" in result.output
    plain = app.enqueue("audit.record", {"n": 2})
    assert "topic" not in CliRunner().invoke(cli, ["job", str(plain.id), "--dsn", dsn]).output
