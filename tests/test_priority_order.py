"""Claim order, also inside one claimed batch: higher priority first, then FIFO by run_at,
then id (DESIGN.md section 2).

The claim statement picks its rows in that order, but its UPDATE ... RETURNING hands them
back in whatever order the update visited them; the worker starts them in the order they come
back, so the statement itself must return them in claim order.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

import pgqueue
from tests.helpers import worker_thread

WORKER_ID = "00000000-0000-0000-0000-000000000000"

#: (n, priority, run_at as seconds before the test's start, or None for "now"), in enqueue
#: order. Priorities interleave, and within a priority run_at disagrees with the enqueue
#: order; jobs 2 and 7 share priority and run_at, so the id decides between them.
JOBS: list[tuple[int, int, float | None]] = [
    (1, 0, 10),
    (2, 5, 5),
    (3, 1, None),
    (4, 10, None),
    (5, 5, 20),
    (6, 0, 30),
    (7, 5, 5),
    (8, 1, 15),
    (9, 10, 1),
]
#: p10: 9 (1 s ago) before 4 (now); p5: 5 (20 s ago), then 2 and 7 (5 s ago, by id);
#: p1: 8 (15 s ago) before 3 (now); p0: 6 (30 s ago) before 1 (10 s ago).
EXPECTED = [9, 4, 5, 2, 7, 8, 3, 6, 1]


def db_now(db: psycopg.Connection[Any]) -> datetime:
    row = db.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def enqueue_jobs(task: Any, db: psycopg.Connection[Any]) -> dict[int, int]:
    """Enqueue JOBS in order; return job id -> n."""
    start = db_now(db)
    ids = {}
    for n, priority, ago in JOBS:
        run_at = None if ago is None else start - timedelta(seconds=ago)
        ids[task.options(priority=priority, run_at=run_at).enqueue(n=n).id] = n
    return ids


def test_worker_runs_jobs_in_claim_order_with_the_defaults(
    app: pgqueue.App, db: psycopg.Connection[Any]
) -> None:
    """The reported case: concurrency 1, default prefetch, so the first claim takes two
    jobs (one to run, one buffered) and later ones one or two; every job is enqueued before
    the worker starts."""
    order: list[int] = []

    @app.task
    def mark(n: int) -> None:
        order.append(n)

    enqueue_jobs(mark, db)
    with worker_thread(app, concurrency=1, burst=True):
        pass
    assert order == EXPECTED


def test_the_bug_report(app: pgqueue.App) -> None:
    """Priorities 0, 5, 1, 10, 5, 0 enqueued in that order ran as 5, 10, 5, 1, 0, 0."""
    order: list[tuple[int, int]] = []

    @app.task
    def mark(n: int, priority: int) -> None:
        order.append((priority, n))

    for n, priority in enumerate([0, 5, 1, 10, 5, 0]):
        mark.options(priority=priority).enqueue(n=n, priority=priority)
    with worker_thread(app, concurrency=1, burst=True):
        pass
    assert order == [(10, 3), (5, 1), (5, 4), (1, 2), (0, 0), (0, 5)]


@pytest.fixture
def jobs(app: pgqueue.App, db: psycopg.Connection[Any]) -> dict[int, int]:
    @app.task(name="t.mark")
    def mark(n: int) -> None: ...

    return enqueue_jobs(mark, db)


def claim(
    app: pgqueue.App, db: psycopg.Connection[Any], variant: str, **params: Any
) -> list[tuple[Any, ...]]:
    return db.execute(
        app.queries[variant],
        {
            "limit": len(JOBS),
            "queues": ["default", "other"],
            "queue": "default",
            "worker_id": WORKER_ID,
            "ids": "{}",
            "leases": "{}",
            "results": "[]",
            "done_channel": "pgqueue_done",
            **params,
        },
    ).fetchall()


@pytest.mark.parametrize(
    "variant",
    ["job_claim_all", "job_claim_one", "job_claim_some", "job_claim_suspect_all"],
)
def test_claim_statement_returns_rows_in_claim_order(
    app: pgqueue.App, db: psycopg.Connection[Any], jobs: dict[int, int], variant: str
) -> None:
    if "_suspect" in variant:
        db.execute("UPDATE pgqueue.jobs SET rescue_count = 2")  # suspects: rescued twice
    rows = claim(app, db, variant)
    assert all(row[0] for row in rows)
    assert [jobs[row[1]] for row in rows] == EXPECTED
    # The columns the worker's cursor reads (priority, run_at, id) sort the same way.
    keys = [(-row[9], row[10], row[1]) for row in rows]
    assert keys == sorted(keys)


@pytest.mark.parametrize("variant", ["job_claim_after_all", "job_claim_after_one"])
def test_continuing_claim_returns_rows_in_claim_order(
    app: pgqueue.App, db: psycopg.Connection[Any], jobs: dict[int, int], variant: str
) -> None:
    """A cursor ahead of every job of priority 5: the whole of priority 5, in order."""
    before = db_now(db) - timedelta(seconds=100)
    rows = claim(app, db, variant, after_priority=5, after_run_at=before, after_id=0)
    assert [jobs[r[1]] for r in rows] == [5, 2, 7]


def test_claimed_rows_come_first_then_the_recorded_successes(
    app: pgqueue.App, db: psycopg.Connection[Any], jobs: dict[int, int]
) -> None:
    """The row layout the worker decodes: claimed rows (true) in claim order, then the ids
    of the successes the same statement recorded (false)."""
    by_n = {n: id_ for id_, n in jobs.items()}
    first = claim(app, db, "job_claim_all", limit=2)
    assert [jobs[r[1]] for r in first] == [9, 4]
    rows = claim(
        app,
        db,
        "job_claim_all",
        limit=3,
        ids="{" + ",".join(str(r[1]) for r in first) + "}",
        leases="{" + ",".join(r[7] for r in first) + "}",
        results="[1, 2]",
    )
    assert [(r[0], jobs[r[1]]) for r in rows[:3]] == [(True, 5), (True, 2), (True, 7)]
    assert sorted((r[0], r[1]) for r in rows[3:]) == sorted([(False, by_n[9]), (False, by_n[4])])
    assert all(r[2:] == (None,) * 10 for r in rows[3:])  # 10: with the schedule slot
