"""The dashboard's pure parts: the CSRF token, the chart's arithmetic, the timeline."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

pytest.importorskip("starlette")

from pgqueue.types import JobInfo, JobState
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
