"""The dashboard's pure parts: the CSRF token, the chart's arithmetic, the timeline."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

pytest.importorskip("starlette")

from pgqueue.types import JobInfo, JobState, QueueLimit, QueueStats
from pgqueue.web import _csrf, _views


def test_a_csrf_token_is_valid_only_for_its_nonce_and_secret() -> None:
    secret, other = b"s" * 32, b"o" * 32
    nonce = _csrf.new_nonce()
    token = _csrf.token_for(secret, nonce)
    assert _csrf.valid(secret, nonce, token)
    assert not _csrf.valid(other, nonce, token)
    assert not _csrf.valid(secret, _csrf.new_nonce(), token)
    assert not _csrf.valid(secret, nonce, None)
    assert not _csrf.valid(secret, None, token)
    assert not _csrf.valid(secret, "", _csrf.token_for(secret, ""))
    assert not _csrf.valid(secret, "x" * 200, _csrf.token_for(secret, "x" * 200))


def test_the_chart_stacks_failed_over_completed_scaled_to_the_busiest_bucket() -> None:
    chart = _views.chart([(0, 0), (10, 0), (15, 5)], width=300, height=104)
    assert chart.peak == 20 and chart.total_completed == 25 and chart.total_failed == 5
    empty, half, full = chart.bars
    assert empty.completed_h == 0 and empty.failed_h == 0
    assert half.completed_h == 50 and half.completed_y == 54
    assert full.completed_h == 75 and full.failed_h == 25 and full.failed_y == 4
    assert [b.x for b in chart.bars] == [0, 100, 200]
    assert full.label == "1 min ago: 15 completed, 5 failed"
    assert _views.chart([]).bars == [] and _views.chart([(0, 0)]).peak == 0


def test_the_timeline_orders_what_happened_to_a_job() -> None:
    t0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
    job = JobInfo(
        id=1,
        task="t",
        queue="q",
        state=JobState.COMPLETED,
        priority=0,
        attempt=2,
        max_attempts=3,
        args={},
        result=None,
        errors=[
            {"attempt": 1, "type": "ValueError", "at": (t0 + timedelta(seconds=2)).isoformat()}
        ],
        created_at=t0,
        run_at=t0 + timedelta(seconds=30),
        started_at=t0 + timedelta(seconds=31),
        finished_at=t0 + timedelta(seconds=32),
    )
    assert [e.what for e in _views.timeline(job)] == [
        "enqueued",
        "attempt 1 failed: ValueError",
        "attempt 2 started",
        "completed",
    ]


def test_filters_go_in_the_url_without_the_empty_ones() -> None:
    filters = {"state": "failed", "queue": None, "task": "a b&c"}
    assert _views.query_string(filters, before=10) == "state=failed&task=a+b%26c&before=10"
    assert _views.ago(0.25) == "250 ms" and _views.ago(75) == "75 s" and _views.ago(600) == "10 min"


def _stats(queue: str, **counts: Any) -> QueueStats:
    zero = dict.fromkeys(
        ("scheduled", "available", "running", "retrying", "completed", "failed", "cancelled"), 0
    )
    base: dict[str, Any] = {**zero, "lag_seconds": 0.0, "failed_last_hour": 0}
    base.update(completed_last_minute=0, paused=False)
    return QueueStats(queue=queue, **{**base, **counts})


def test_queue_marks_and_warnings_follow_pgqueue_status() -> None:
    assert _views.fill(_stats("a", depth=5)) == ""  # no max_depth
    assert _views.fill(_stats("a", depth=8, max_depth=10)) == ""
    assert _views.fill(_stats("a", depth=9, max_depth=10)) == "nearly-full"
    assert _views.fill(_stats("a", depth=10, max_depth=10)) == "full"
    stats = [
        _stats("orphan", available=3, depth=3),  # ready, nobody serves it
        _stats("served", available=3, depth=3, live_workers=1),
        _stats("paused", available=3, depth=3, paused=True),  # paused says why, not a worker
        _stats("waits", waiting=4),  # workflow jobs wait for others, not for a worker
        _stats("capped", depth=2, max_depth=2, live_workers=1),
    ]
    assert _views.warnings(stats) == [
        ("orphan", "3 jobs waiting and no live worker"),
        ("capped", "full (2/2)"),
    ]


def test_limits_per_queue_from_queue_limits_rows() -> None:
    def row(queue: str, group: str | None = None, **kw: Any) -> QueueLimit:
        base: dict[str, Any] = dict(concurrency=None, running=0, rate=None, starts=None)
        base.update(tokens=None, waiting=0, fair=False, max_depth=None, paused=False)
        return QueueLimit(queue=queue, group_key=group, **{**base, **kw})

    rows = [
        row("api", concurrency=5, running=2, rate="20/s", starts=2, tokens=18),
        row("api", "acme", concurrency=1, running=1),
        row("plain"),  # no limits: absent
    ]
    assert _views.limits(rows) == {"api": _views.Limits("2/5", "18 left of 20/s", 1)}


def test_workflow_relations_in_page_order_empty_ones_left_out() -> None:
    graph = {
        "after": [],
        "spawned": [{"id": 3, "task": "t", "state": "running"}],
        "needed_by": [],
        "spawned_by": [{"id": 1, "task": "p", "state": "waiting"}],
        "steps": [],
        "waiting_on": [3],
    }
    assert [(k, len(jobs)) for k, _, jobs in _views.workflow(graph)] == [
        ("spawned", 1),
        ("spawned_by", 1),
    ]
    assert _views.workflow({"after": [], "steps": []}) == []


FILL = """
INSERT INTO pgqueue.jobs (task, state, attempt, finished_at)
SELECT 't', CASE WHEN i % 1000 = 0 THEN 'failed' ELSE 'completed' END, 1, now()
  FROM generate_series(1, 20000) AS i
"""
LIST_PARAMS = {
    "queue": None,
    "task": None,
    "group_key": None,
    "topic": None,
    "schedule": None,
    "older_than": None,
    "newer_than": None,
    "limit": 51,
    "before": 15000,
    "after": None,
}


def _plan(db: Any, app: Any, name: str) -> str:
    db.execute("SET plan_cache_mode = force_generic_plan")  # as a prepared statement runs
    rows = db.execute("EXPLAIN (COSTS OFF) " + app.queries[name], LIST_PARAMS).fetchall()
    return "\n".join(r[0] for r in rows)


def test_job_pages_read_one_index_page_under_a_generic_plan(app: Any, db: Any) -> None:
    """A keyset page starts at its bound in the primary key; a failed-jobs page reads the
    partial index of failed jobs instead of walking every newer finished one."""
    db.execute(FILL)
    db.execute("VACUUM ANALYZE pgqueue.jobs")
    plain = _plan(db, app, "job_list")
    assert "Index Scan Backward using jobs_pkey" in plain
    assert "Index Cond: ((id < " in plain  # the bound is where the scan starts
    assert "jobs_failed_idx" in _plan(db, app, "job_list_failed")
    assert "jobs_failed_idx" in _plan(db, app, "job_list_cancelled")
    rows = app.list_jobs(state="failed", before=15000, limit=5)
    assert [r["id"] for r in rows] == [14000, 13000, 12000, 11000, 10000]
    assert all(r["state"] == "failed" for r in rows)
    newer = app.list_jobs(state="failed", after=10000, limit=2)
    assert [r["id"] for r in newer] == [12000, 11000]
