"""The App a benchmark worker process loads by path: `pgqueue worker benchmarks.bench_app:app`.

It is a module of its own because the worker imports the App in a fresh process; the DSN is
read from PGQUEUE_DSN so that each benchmark run can point the worker at its scratch database.
"""

from __future__ import annotations

import os
import time

import pgqueue

app = pgqueue.App()


def noop(n: int) -> None:
    """Does nothing, so that the drain benchmark measures the queue and not the task."""
    return None


async def async_noop(n: int) -> None:
    """The same as a coroutine (`--async-task`): run on the event loop, no thread hand-off."""
    return None


if os.environ.get("PGQUEUE_BENCH_ASYNC") == "1":
    app.task(name="bench.noop")(async_noop)
else:
    app.task(name="bench.noop")(noop)


@app.task(name="bench.stamp")
def stamp(n: int) -> float:
    """The wall-clock time the task started: the latency workload's only measurement point."""
    return time.time()


@app.task(name="bench.fan")
def fan(n: int) -> int:
    """Fan out `n` no-op children and join them: the workflow workload."""
    ctx = pgqueue.current_job()
    # By name: `noop` is the plain function, registered under bench.noop (sync or async).
    children = ctx.map("bench.noop", [{"n": i} for i in range(n)])
    return len(ctx.gather(children))
