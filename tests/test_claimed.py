"""Claimed is not started: jobs a worker claims ahead of its free slots (its prefetch buffer)
read `claimed`, spend no attempt and carry no start time until they start; their durations,
the running counts and a kill -9 reflect what actually ran.

Each test runs a real worker process with `-c 1` (prefetch 1 by default): one job runs, one
waits in its buffer.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import psycopg

import pgqueue
from tests.helpers import spawn_worker, wait_until

LEDGER = "CREATE TABLE ledger (job_id bigint NOT NULL, n int NOT NULL, pid int NOT NULL)"
FAST_HEARTBEAT = ["--heartbeat-interval", "0.2", "--heartbeat-timeout", "1.5"]
ONE_SLOT = ["-c", "1", "--prefetch", "1", "--poll-interval", "0.1", *FAST_HEARTBEAT]


def states(db: psycopg.Connection[Any], ids: list[int]) -> dict[int, str]:
    rows = db.execute("SELECT id, state FROM pgqueue.job_status WHERE id = ANY(%s)", [ids])
    return {r[0]: r[1] for r in rows.fetchall()}


def stop(proc: Any) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)


def test_a_buffered_job_reads_claimed_and_its_duration_excludes_the_wait(
    dsn: str, db: psycopg.Connection[Any]
) -> None:
    db.execute(LEDGER)
    app = pgqueue.App(dsn)
    ids = [j.id for j in app.enqueue_many("ledger.sleep", [{"seconds": 1.5}] * 3)]
    worker = spawn_worker("tests.apps.ledger:app", dsn, *ONE_SLOT)
    try:
        wait_until(lambda: "running" in states(db, ids).values(), 20, "the first job to start")
        seen = states(db, ids)
        assert sorted(seen.values()) == ["available", "claimed", "running"], seen
        claimed = next(i for i, s in seen.items() if s == "claimed")
        info = app.get_job(claimed)
        assert (info.state, info.attempt, info.started_at) == (pgqueue.JobState.CLAIMED, 0, None)
        (stats,) = [s for s in app.queue_stats() if s.queue == "default"]
        assert (stats.running, stats.claimed) == (1, 1)
        (me,) = app.workers()
        assert (me["running"], me["claimed"], me["concurrency"]) == (1, 1, 1)
        wait_until(lambda: app.unfinished(ids) == 0, 30, "all three to finish")
    finally:
        stop(worker)
    for job_id in ids:
        info = app.get_job(job_id)
        assert info.attempt == 1 and info.started_at is not None and info.finished_at is not None
        took = (info.finished_at - info.started_at).total_seconds()
        # Each ran 1.5 s; counted from the claim, the buffered ones would read about 3 s.
        assert 1.4 < took < 2.4, (job_id, took)


def test_kill_9_charges_the_running_job_only(dsn: str, db: psycopg.Connection[Any]) -> None:
    db.execute(LEDGER)
    app = pgqueue.App(dsn)
    running = app.enqueue("ledger.sleep", {"seconds": 3}).id
    buffered = app.enqueue("ledger.sleep", {"seconds": 0.1}).id
    victim = spawn_worker("tests.apps.ledger:app", dsn, *ONE_SLOT)
    survivor = None
    try:
        wait_until(
            lambda: states(db, [running, buffered]) == {running: "running", buffered: "claimed"},
            20,
            "one job running, one claimed",
        )
        victim.kill()
        victim.wait(10)
        survivor = spawn_worker("tests.apps.ledger:app", dsn, "--poll-interval", "0.1")
        wait_until(lambda: app.unfinished([running, buffered]) == 0, 40, "rescue and reruns")
    finally:
        if victim.poll() is None:
            victim.kill()
        if survivor is not None:
            stop(survivor)
    lost = app.get_job(running)
    assert (lost.state, lost.attempt, lost.rescue_count) == (pgqueue.JobState.COMPLETED, 2, 1)
    assert lost.errors[0]["type"] == "WorkerLost"
    spared = app.get_job(buffered)
    assert (spared.state, spared.attempt, spared.rescue_count, spared.errors) == (
        pgqueue.JobState.COMPLETED,
        1,
        0,
        [],
    )


def test_a_long_job_started_from_the_buffer_reads_running_and_is_charged(
    dsn: str, db: psycopg.Connection[Any]
) -> None:
    """Its start is written on its own within the report delay, so from then on it is
    `running` with its real start, and a crash counts against it."""
    db.execute(LEDGER)
    app = pgqueue.App(dsn)
    first = app.enqueue("ledger.sleep", {"seconds": 0.5}).id
    second = app.enqueue("ledger.sleep", {"seconds": 8}).id
    victim = spawn_worker("tests.apps.ledger:app", dsn, *ONE_SLOT)
    survivor = None
    try:
        wait_until(
            lambda: states(db, [first, second]) == {first: "running", second: "claimed"},
            20,
            "the second job in the buffer",
        )
        wait_until(lambda: app.get_job(second).state is pgqueue.JobState.RUNNING, 10, "report")
        reported = time.monotonic()
        info, before = app.get_job(second), app.get_job(first)
        assert info.attempt == 1 and info.started_at is not None
        assert before.finished_at is not None
        # Started when the first job's slot freed, not when the start was written.
        assert abs((info.started_at - before.finished_at).total_seconds()) < 0.4
        victim.kill()
        victim.wait(10)
        assert time.monotonic() - reported < 6, "the kill must land while the job runs"
        survivor = spawn_worker("tests.apps.ledger:app", dsn, "--poll-interval", "0.1")
        wait_until(
            lambda: app.get_job(second).rescue_count == 1, 20, "the rescue of the started job"
        )
    finally:
        if victim.poll() is None:
            victim.kill()
        if survivor is not None:
            stop(survivor)
    info = app.get_job(second)
    assert info.errors[0]["type"] == "WorkerLost" and info.errors[0]["attempt"] == 1
