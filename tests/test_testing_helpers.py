"""pgqueue.testing: what users call in their own test suites."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import pgqueue
from pgqueue.testing import assert_enqueued, drain, inline, refute_enqueued


def test_inline_runs_tasks_at_enqueue_without_the_database(app: pgqueue.App, db: Any) -> None:
    @app.task
    def double(n: int) -> int:
        return n * 2

    @app.task
    async def shout(word: str) -> str:
        await asyncio.sleep(0)
        return word.upper()

    @app.task
    def broken() -> None:
        raise ValueError("inline failure")

    with inline(app) as ran:
        assert double.enqueue(n=21).wait() == 42
        assert shout.enqueue(word="hi").wait() == "HI"
        jobs = double.enqueue_many({"n": i} for i in range(3))
        assert [j.wait() for j in jobs] == [0, 2, 4]
        failing = broken.enqueue()  # does not raise here, as it would not in production
        with pytest.raises(pgqueue.JobFailed, match="inline failure"):
            failing.wait()
        with pytest.raises(pgqueue.ValidationError):
            double.enqueue(n=float("nan"))  # still validated like a real enqueue
    assert [j.task for j in ran] == [double.name, shout.name] + [double.name] * 3 + [broken.name]
    assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (0,)
    assert double.enqueue(n=1).id > 0  # outside the block, jobs are stored again


def test_inline_works_from_async_code(app: pgqueue.App) -> None:
    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    async def main() -> int:
        with inline(app):
            job = await add.enqueue_async(a=2, b=3)
            return int(await job.wait_async())

    assert asyncio.run(main()) == 5


def test_assert_and_refute_enqueued(app: pgqueue.App) -> None:
    @app.task(queue="emails")
    def send(user_id: int, template: str) -> None: ...

    refute_enqueued(app, send)
    send.enqueue(user_id=1, template="welcome")
    send.enqueue(user_id=2, template="welcome")
    assert_enqueued(app, send, {"user_id": 1})
    assert_enqueued(app, send.name, {"template": "welcome"}, count=2, queue="emails")
    refute_enqueued(app, send, {"user_id": 3})
    with pytest.raises(AssertionError, match=r"found 0; enqueued: .*user_id"):
        assert_enqueued(app, send, {"user_id": 3})
    with pytest.raises(AssertionError, match="expected 1 job"):
        assert_enqueued(app, send, {"template": "welcome"}, count=1)
    with pytest.raises(AssertionError, match="expected no job"):
        refute_enqueued(app, send, {"user_id": 2})


def test_drain_runs_what_is_due(app: pgqueue.App) -> None:
    seen: list[int] = []

    @app.task
    def record(n: int) -> None:
        seen.append(n)

    record.enqueue_many({"n": i} for i in range(10))
    later = record.options(delay=3600).enqueue(n=99)
    stats = drain(app)
    assert sorted(seen) == list(range(10))
    assert stats["completed"] == 10
    assert_enqueued(app, record, {"n": 99})
    assert app.get_job(later.id).state is pgqueue.JobState.SCHEDULED
