"""The hot path's shape, as a count: draining N jobs costs about N / batch statements, never
one per job (ARCHITECTURE.md §3.9). A count, not a time, so it holds on any machine."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

import pgqueue
from pgqueue._runtime.settings import PREFETCH_CEILING
from pgqueue.testing import worker_thread


def counting(worker: pgqueue.Worker) -> Counter[str]:
    """Count every statement the worker sends, at the seam all of them go through."""
    counts: Counter[str] = Counter()
    db = worker.db
    fetch, claim = db.fetch, db.claim

    async def counted_fetch(name: str, params: dict[str, Any] | None = None) -> list[Any]:
        counts[name] += 1
        return await fetch(name, params)

    async def counted_claim(statement: Any, limit: int, done: Any, **kw: Any) -> Any:
        if limit == 0:  # the completer writing successes on their own
            counts["job_claim (records only)"] += 1
        else:
            counts["job_claim (records)" if done else "job_claim"] += 1
        return await claim(statement, limit, done, **kw)

    db.fetch = counted_fetch  # type: ignore[method-assign]
    db.claim = counted_claim  # type: ignore[method-assign]
    return counts


@pytest.mark.parametrize("prefetch", [None, 20], ids=["adaptive", "fixed"])
def test_draining_costs_statements_per_batch_not_per_job(
    app: pgqueue.App, prefetch: int | None
) -> None:
    n, concurrency = 3000, 20

    @app.task(name="count.noop")
    def noop(i: int) -> None: ...

    noop.enqueue_many({"i": i} for i in range(n))
    worker = app.worker(
        concurrency=concurrency, prefetch=prefetch, burst=True, handle_signals=False
    )
    counts = counting(worker)
    with worker_thread(app, worker=worker):
        pass
    assert worker.stats["completed"] == n
    claims = (
        counts["job_claim"] + counts["job_claim (records)"] + counts["job_claim (records only)"]
    )
    other = sum(counts.values()) - claims
    # Each claim takes up to concurrency + prefetch jobs and refills at half the buffer, and
    # the successes ride along with it, so a drain needs about n / concurrency statements
    # (measured: 160 for 3,000 jobs at 20); start-up, heartbeat and shutdown add a handful.
    # Successes written on their own would double that; one statement per job is >= n. The
    # adaptive prefetch grows the batches with the pace (measured: about 60 statements).
    assert claims <= 1.25 * n / concurrency + 10, counts
    # ...and at least the claims a full buffer each time would need: the counting seam saw
    # the statements (a broken hook would count nothing and pass the bounds above).
    biggest = 2 * concurrency if prefetch is not None else concurrency + PREFETCH_CEILING
    assert claims >= n / biggest, counts
    assert other <= 10, counts


def test_successes_ride_along_with_the_claims_of_a_backlog(app: pgqueue.App) -> None:
    """While a worker works through a backlog a claim follows within milliseconds, so its
    successes wait for it (SUCCESS_HOLD) instead of costing a statement and a commit of
    their own each time the completer wakes up."""
    n, concurrency = 3000, 10

    @app.task(name="count.noop")
    def noop(i: int) -> None: ...

    noop.enqueue_many({"i": i} for i in range(n))
    # A fixed prefetch: the adaptive one starts at the floor (concurrency), where holding
    # successes would keep jobs from starting, so none are held until it has grown, and
    # how fast it grows depends on the machine's pace.
    worker = app.worker(concurrency=concurrency, prefetch=100, burst=True, handle_signals=False)
    counts = counting(worker)
    with worker_thread(app, worker=worker):
        pass
    assert worker.stats["completed"] == n
    with_claims = counts["job_claim (records)"]
    alone = counts["job_claim (records only)"]
    # Measured: 1-10 writes on their own (once the queue is dry) against 59 claims that
    # carried successes, also with three CPU burners running; when every wake-up of the
    # completer wrote its batch alone, that count was the larger one.
    assert with_claims >= 5, counts
    assert alone <= with_claims, counts
