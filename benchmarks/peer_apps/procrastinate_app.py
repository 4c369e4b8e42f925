"""Procrastinate side of benchmarks/peers.py (runs in benchmarks/.venvs/procrastinate).

APIs used: `App(connector=PsycopgConnector(...))`, `schema_manager.apply_schema_async()`,
`Task.batch_defer_async(*kwargs)` (bulk: one call, one statement), `Task.defer_async(**kwargs)`
(single: one transaction per job), `App.run_worker_async(...)`: `wait=False` stops once the
queues are empty (Procrastinate's burst mode); otherwise the worker runs until this script
cancels it, which Procrastinate turns into a graceful stop (running jobs finish).
`listen_notify=False` with `fetch_job_polling_interval` is its poll-only mode. Completion
times come from its own `procrastinate_events` rows (`type = 'succeeded'`).

Feature workloads (`--plan`): only the per-tenant limit of `fairness`, through
`Task.configure(lock=<tenant>)` (no two jobs with the same lock run at once). Its
`queueing_lock` (no two jobs with that lock waiting) would refuse a tenant's backlog, and it has
no rate limit, limit above 1, topics or workflows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import Any

import procrastinate
from _protocol import Ledger, paced_async, ready, serve  # the script's folder is on sys.path

TASK = "bench_noop"
QUEUE = "bench"
LEDGER = Ledger(0)
STOP = asyncio.Event()
STOP_AFTER = {"executions": 0}


async def noop(n: int) -> None:
    """Does nothing but record that it ran, so that lost or duplicated runs show up."""
    if LEDGER.ran(n, time.time()) >= STOP_AFTER["executions"] > 0:
        STOP.set()


def make_app(dsn: str) -> procrastinate.App:
    """An App bound to this run's scratch database, with the no-op task registered."""
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))
    app.task(name=TASK, queue=QUEUE)(noop)
    return app


async def setup(args: argparse.Namespace) -> dict[str, Any]:
    async with make_app(args.target).open_async() as app:
        await app.schema_manager.apply_schema_async()
    return {}


async def count_jobs(app: procrastinate.App) -> int:
    row = await app.connector.execute_query_one_async(
        "SELECT count(*) AS n FROM procrastinate_jobs"
    )
    return int(row["n"])


async def enqueue_bulk(args: argparse.Namespace) -> dict[str, Any]:
    async with make_app(args.target).open_async() as app:
        task = app.tasks[TASK]
        items = [{"n": i} for i in range(args.jobs)]
        await app.check_connection_async()  # the pool is open: connecting is not timed
        start = time.perf_counter()
        ids = await task.batch_defer_async(*items)
        elapsed = time.perf_counter() - start
        return {"enqueued": await count_jobs(app), "ids": len(ids), "elapsed_s": elapsed}


def tenants(plan: dict[str, Any]) -> list[tuple[str, range]]:
    """The fairness backlog in enqueue order (as benchmarks/features.py numbers it)."""
    hot, small = plan["hot"], plan["small"]
    return [("hot", range(hot))] + [
        (f"t{g:03}", range(hot + g * small, hot + (g + 1) * small)) for g in range(plan["tenants"])
    ]


async def enqueue_feature(args: argparse.Namespace) -> dict[str, Any]:
    plan = args.plan
    if plan["workload"] != "fairness" or plan["mode"] != "tenant-limit":
        raise SystemExit(f"Procrastinate has no feature for {plan['workload']}")
    async with make_app(args.target).open_async() as app:
        task = app.tasks[TASK]
        for tenant, numbers in tenants(plan):
            await task.configure(lock=tenant).batch_defer_async(*({"n": n} for n in numbers))
        return {"enqueued": await count_jobs(app)}


async def enqueue_single(args: argparse.Namespace) -> dict[str, Any]:
    async with make_app(args.target).open_async() as app:
        task = app.tasks[TASK]
        await app.check_connection_async()
        start = time.perf_counter()
        for i in range(args.jobs):
            await task.defer_async(n=i)
        elapsed = time.perf_counter() - start
        return {"enqueued": await count_jobs(app), "elapsed_s": elapsed}


async def latency_enqueue(args: argparse.Namespace) -> dict[str, Any]:
    commits: dict[int, float] = {}
    async with make_app(args.target).open_async() as app:
        task = app.tasks[TASK]
        await app.check_connection_async()
        for phase, numbers in (
            ("warmup", range(args.warmup)),
            ("measured", range(args.warmup, args.warmup + args.jobs)),
        ):
            start = time.perf_counter()
            for index, n in enumerate(numbers):
                await paced_async(index, start, args.rate)
                await task.defer_async(n=n)
                commits[n] = time.time()
            if phase == "warmup":
                await asyncio.sleep(1.0)
    return {"commits": commits}


async def work(args: argparse.Namespace) -> dict[str, Any]:
    global LEDGER
    LEDGER = Ledger(args.total, record_starts=args.record_starts)
    options: dict[str, Any] = {
        "concurrency": args.concurrency,
        "queues": [QUEUE],
        "install_signal_handlers": False,
        "listen_notify": not args.no_listen,
    }
    if args.poll_interval is not None:
        options["fetch_job_polling_interval"] = args.poll_interval
    async with make_app(args.target).open_async() as app:
        if args.mode == "drain":
            ready()
            await app.run_worker_async(wait=False, **options)
        else:
            if args.mode == "count":
                STOP_AFTER["executions"] = args.stop_after or args.total
            else:
                asyncio.get_running_loop().call_later(max(0.0, args.until - time.time()), STOP.set)
            worker = asyncio.create_task(app.run_worker_async(wait=True, **options))
            ready()
            stop = asyncio.create_task(STOP.wait())
            await asyncio.wait({worker, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if worker.done():
                worker.result()  # re-raise: the worker stopped on its own
                raise RuntimeError("the worker stopped before it was asked to")
            worker.cancel()  # Procrastinate stops gracefully: running jobs finish first
            with contextlib.suppress(asyncio.CancelledError):
                await worker
    return LEDGER.report()


async def verify(args: argparse.Namespace) -> dict[str, Any]:
    async with make_app(args.target).open_async() as app:
        c = app.connector
        rows = await c.execute_query_all_async(
            "SELECT status::text AS status, count(*) AS n FROM procrastinate_jobs GROUP BY 1"
        )
        span = await c.execute_query_one_async(
            "SELECT extract(epoch FROM min(at))::float8 AS first,"
            "       extract(epoch FROM max(at))::float8 AS last"
            "  FROM procrastinate_events WHERE type = 'succeeded'"
        )
        events = await c.execute_query_all_async(
            "SELECT type::text AS type, count(*) AS n FROM procrastinate_events GROUP BY 1"
        )
        histogram: dict[str, int] = {}
        if args.histogram:
            buckets = await c.execute_query_all_async(
                "SELECT floor(extract(epoch FROM at) * 10)::bigint AS b, count(*) AS n"
                "  FROM procrastinate_events WHERE type = 'succeeded' GROUP BY 1"
            )
            histogram = {str(r["b"]): int(r["n"]) for r in buckets}
    states = {r["status"]: int(r["n"]) for r in rows}
    counts = {r["type"]: int(r["n"]) for r in events}
    completed = states.get("succeeded", 0)
    # A job started more often than it succeeded ran (or began to run) twice.
    restarted = max(0, counts.get("started", 0) - completed - states.get("doing", 0))
    failures = sum(states.get(s, 0) for s in ("failed", "cancelled", "aborted"))
    return {
        "completed": completed,
        "left": states.get("todo", 0),
        "in_flight": states.get("doing", 0),
        "bad": failures + restarted + counts.get("deferred_for_retry", 0),
        "other": {
            **{k: v for k, v in states.items() if k not in ("succeeded", "todo", "doing")},
            **{f"events_{k}": v for k, v in counts.items()},
        },
        "first_completion": span["first"],
        "last_completion": span["last"],
        "histogram": histogram,
    }


if __name__ == "__main__":
    serve(
        {
            "setup": setup,
            "teardown": lambda args: {},
            "enqueue-bulk": enqueue_bulk,
            "enqueue-single": enqueue_single,
            "enqueue-feature": enqueue_feature,
            "latency-enqueue": latency_enqueue,
            "work": work,
            "verify": verify,
        }
    )
