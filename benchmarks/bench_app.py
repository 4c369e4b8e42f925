"""The App a benchmark worker process loads by path: `pgqueue worker benchmarks.bench_app:app`.

It is a module of its own because the worker imports the App in a fresh process; the DSN is
read from PGQUEUE_DSN so that each benchmark run can point the worker at its scratch database.
"""

from __future__ import annotations

import time

import pgqueue

app = pgqueue.App()


@app.task(name="bench.noop")
def noop(n: int) -> None:
    """Does nothing, so that the drain benchmark measures the queue and not the task."""
    return None


@app.task(name="bench.stamp")
def stamp(n: int) -> float:
    """The wall-clock time the task started: the latency workload's only measurement point."""
    return time.time()


@app.task(name="bench.fan")
def fan(n: int) -> int:
    """Fan out `n` no-op children and join them: the workflow workload."""
    ctx = pgqueue.current_job()
    children = ctx.map(noop, [{"n": i} for i in range(n)])
    return len(ctx.gather(children))
