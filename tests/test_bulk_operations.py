"""Bulk steering: cancel by filter, and retry every failed job with a fresh attempt budget."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import pgqueue
from pgqueue.testing import drain
from tests.helpers import wait_until, worker_thread


def test_cancel_many_by_queue_task_and_state(app: pgqueue.App, db: Any) -> None:
    @app.task(name="bulk.a", queue="crm")
    def a() -> None: ...

    @app.task(name="bulk.b", queue="crm")
    def b() -> None: ...

    @app.task(name="bulk.c", queue="mail")
    def c() -> None: ...

    crm_a = a.enqueue_many([{}] * 5)
    crm_b_later = b.options(delay=3600).enqueue_many([{}] * 3)
    mail = c.enqueue_many([{}] * 4)
    assert app.cancel_many(queue="crm", task="bulk.b", state="available") == 0  # all scheduled
    assert app.cancel_many(queue="crm", task="bulk.b") == 3
    assert asyncio.run(app.cancel_many_async(queue="crm")) == 5
    states = dict(
        db.execute("SELECT task, array_agg(DISTINCT state) FROM pgqueue.jobs GROUP BY task")
    )
    assert states == {"bulk.a": ["cancelled"], "bulk.b": ["cancelled"], "bulk.c": ["available"]}
    assert app.cancel_many(queue="crm") == 0  # finished jobs are left alone
    assert len(crm_a) == 5 and len(crm_b_later) == 3 and len(mail) == 4
    with pytest.raises(pgqueue.ValidationError):
        app.cancel_many(state="completed")


def test_cancel_many_asks_running_jobs_to_stop(app: pgqueue.App) -> None:
    started = threading.Event()

    @app.task(name="bulk.slow", queue="crm")
    async def slow() -> None:
        started.set()
        await asyncio.sleep(60)

    job = slow.enqueue()
    with worker_thread(app, heartbeat_interval=0.1, heartbeat_timeout=1.0, poll_interval=0.1):
        assert started.wait(10)
        assert app.cancel_many(queue="crm", state="running") == 1
        wait_until(lambda: app.get_job(job.id).state is pgqueue.JobState.CANCELLED, 10, "the stop")


def test_retry_failed_fresh_gives_a_full_attempt_budget(app: pgqueue.App) -> None:
    outage = [True]

    @app.task(name="bulk.flaky", max_attempts=2, retry=pgqueue.RetryPolicy(base=0, jitter=0))
    def flaky() -> str:
        if outage[0]:
            raise ConnectionError("the API is down")
        return "ok"

    jobs = flaky.enqueue_many([{}] * 3)
    drain(app)
    drain(app)
    assert {app.get_job(j.id).state for j in jobs} == {pgqueue.JobState.FAILED}
    assert app.retry_failed(fresh=True) == 3
    infos = [app.get_job(j.id) for j in jobs]
    assert {(i.state, i.attempt, i.max_attempts) for i in infos} == {
        (pgqueue.JobState.AVAILABLE, 0, 2)
    }
    drain(app)  # still down: a whole budget of attempts again, not just one more
    assert {(app.get_job(j.id).state, app.get_job(j.id).attempt) for j in jobs} == {
        (pgqueue.JobState.FAILED, 2)
    }
    assert app.retry_failed() == 3  # without fresh: one more attempt each
    assert {app.get_job(j.id).max_attempts for j in jobs} == {3}
    drain(app)
    assert {(app.get_job(j.id).state, app.get_job(j.id).attempt) for j in jobs} == {
        (pgqueue.JobState.FAILED, 3)
    }  # exactly one more attempt
    assert app.retry_failed(fresh=True) == 3
    outage[0] = False
    drain(app)
    assert {app.get_job(j.id).state for j in jobs} == {pgqueue.JobState.COMPLETED}
    assert app.retry_failed() == 0


def test_retry_failed_leaves_jobs_whose_unique_key_is_held(app: pgqueue.App, db: Any) -> None:
    @app.task(name="bulk.doomed", max_attempts=1)
    def doomed() -> None:
        raise pgqueue.Fail("no")

    def failed(key: str | None) -> int:
        job = doomed.options(unique_key=key).enqueue()
        drain(app)
        assert app.get_job(job.id).state is pgqueue.JobState.FAILED
        return job.id

    # Two failed jobs share "k" (the second was enqueued once the first had finished).
    older, newer = failed("k"), failed("k")
    # "h" failed, and a job enqueued since holds it (scheduled, unfinished).
    held = failed("h")
    holder = doomed.options(unique_key="h", delay=3600).enqueue().id
    plain = failed(None)

    assert app.count_failed() == 2  # what the retry announces is what it retries
    assert app.retry_failed() == 2  # before migration 019: a unique violation, nothing retried
    states = dict(db.execute("SELECT id, state FROM pgqueue.jobs"))
    assert states == {
        older: "failed",
        newer: "available",
        held: "failed",
        holder: "scheduled",
        plain: "available",
    }
    assert app.count_failed() == 0
    assert app.retry_failed() == 0
