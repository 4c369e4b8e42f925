"""Procrastinate drain worker for benchmarks/peers.py (runs in benchmarks/.venvs/procrastinate).

Jobs are deferred with `batch_defer_async`; the worker runs with `wait=False`, i.e. it stops
once no job is left, which is Procrastinate's equivalent of a burst worker.
"""

from __future__ import annotations

import time
from typing import Any

import procrastinate
from _protocol import serve  # the script's folder is on sys.path

STATE: dict[str, Any] = {"executions": 0, "seen": set(), "first_start": None, "last_done": None}


async def noop(n: int) -> None:
    """Does nothing but record that it ran, so that lost or duplicated runs show up."""
    now = time.time()
    if STATE["first_start"] is None:
        STATE["first_start"] = now
    STATE["executions"] += 1
    STATE["seen"].add(n)
    STATE["last_done"] = time.time()


def make_app(dsn: str) -> procrastinate.App:
    """An App bound to this run's scratch database, with the no-op task registered."""
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))
    app.task(name="bench_noop", queue="bench")(noop)
    return app


async def enqueue(dsn: str, jobs: int) -> dict[str, Any]:
    async with make_app(dsn).open_async() as bound:
        await bound.schema_manager.apply_schema_async()
        task = bound.tasks["bench_noop"]
        ids: list[int] = []
        chunk = 5000
        for start in range(0, jobs, chunk):
            ids += await task.batch_defer_async(
                *({"n": i} for i in range(start, min(jobs, start + chunk)))
            )
    return {"enqueued": len(ids)}


async def work(dsn: str, jobs: int, concurrency: int) -> dict[str, Any]:
    async with make_app(dsn).open_async() as bound:
        await bound.run_worker_async(
            concurrency=concurrency, wait=False, queues=["bench"], install_signal_handlers=False
        )
        connector = bound.connector
        rows = await connector.execute_query_all_async(
            "SELECT status::text AS status, count(*) AS n FROM procrastinate_jobs GROUP BY 1"
        )
    by_status = {row["status"]: int(row["n"]) for row in rows}
    return {
        "executions": STATE["executions"],
        "distinct": len(STATE["seen"]),
        "first_start": STATE["first_start"],
        "last_done": STATE["last_done"],
        "completed": by_status.get("succeeded", 0),
        "db_states": by_status,
    }


if __name__ == "__main__":
    serve(enqueue, work)
