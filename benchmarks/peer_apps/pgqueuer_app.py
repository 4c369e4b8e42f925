"""PgQueuer side of benchmarks/peers.py (runs in benchmarks/.venvs/pgqueuer).

APIs used: `Queries(AsyncpgDriver(conn))`, `Queries.install()`, the list form of
`Queries.enqueue(entrypoints, payloads, priorities)` (bulk: one call, one statement), its
scalar form (single: one autocommit statement per job), `PgQueuer.entrypoint(...)` and
`PgQueuer.run(mode=drain)`, which returns once the queue is empty and in-flight jobs are
done; otherwise `PgQueuer.shutdown` is set to stop it (running jobs finish).

Concurrency: `run(max_concurrent_tasks=C, batch_size=C // 2)`, the per-process cap (PgQueuer
requires max_concurrent_tasks >= 2 x batch_size). An entrypoint's `concurrency_limit` is
not used by the drains: PgQueuer enforces it across all workers, so two processes would share
one limit. It is what the `concurrency` feature workload measures (`--plan`): the same drain
with `entrypoint(..., concurrency_limit=L)`. PgQueuer has no other feature of the harness's
feature workloads (no per-key limit or fairness, no rate limit in 1.6.0, no topics, no
workflows).
PgQueuer always LISTENs: `dequeue_timeout` only bounds the wait between notifications, so it
has no poll-only mode. A finished job is deleted from `pgqueuer` and logged in
`pgqueuer_log`, whose `created` column gives the completion times; log aggregation is
disabled so those rows stay countable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import timedelta
from typing import Any

import asyncpg
from _protocol import Ledger, paced_async, ready, serve  # the script's folder is on sys.path
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job
from pgqueuer.queries import Queries
from pgqueuer.types import QueueExecutionMode

ENTRYPOINT = "bench_noop"
LEDGER = Ledger(0)


def payload(n: int) -> bytes:
    return json.dumps({"n": n}).encode()


async def setup(args: argparse.Namespace) -> dict[str, Any]:
    conn = await asyncpg.connect(args.target)
    try:
        await Queries(AsyncpgDriver(conn)).install()
    finally:
        await conn.close()
    return {}


async def enqueue_bulk(args: argparse.Namespace) -> dict[str, Any]:
    conn = await asyncpg.connect(args.target)
    try:
        queries = Queries(AsyncpgDriver(conn))
        payloads: list[bytes | None] = [payload(i) for i in range(args.jobs)]
        entrypoints = [ENTRYPOINT] * args.jobs
        priorities = [0] * args.jobs
        start = time.perf_counter()
        ids = await queries.enqueue(entrypoints, payloads, priorities)
        elapsed = time.perf_counter() - start
        rows = await conn.fetchval("SELECT count(*) FROM pgqueuer")
    finally:
        await conn.close()
    return {"enqueued": int(rows), "ids": len(ids), "elapsed_s": elapsed}


async def enqueue_feature(args: argparse.Namespace) -> dict[str, Any]:
    """The concurrency workload's backlog: plain jobs, the limit is the entrypoint's."""
    if args.plan["workload"] != "concurrency":
        raise SystemExit(f"PgQueuer has no feature for {args.plan['workload']}")
    args.jobs = args.plan["jobs"]
    return await enqueue_bulk(args)


async def enqueue_single(args: argparse.Namespace) -> dict[str, Any]:
    conn = await asyncpg.connect(args.target)
    try:
        queries = Queries(AsyncpgDriver(conn))
        start = time.perf_counter()
        for i in range(args.jobs):
            await queries.enqueue(ENTRYPOINT, payload(i), 0)
        elapsed = time.perf_counter() - start
        rows = await conn.fetchval("SELECT count(*) FROM pgqueuer")
    finally:
        await conn.close()
    return {"enqueued": int(rows), "elapsed_s": elapsed}


async def latency_enqueue(args: argparse.Namespace) -> dict[str, Any]:
    commits: dict[int, float] = {}
    conn = await asyncpg.connect(args.target)
    try:
        queries = Queries(AsyncpgDriver(conn))
        for phase, numbers in (
            ("warmup", range(args.warmup)),
            ("measured", range(args.warmup, args.warmup + args.jobs)),
        ):
            start = time.perf_counter()
            for index, n in enumerate(numbers):
                await paced_async(index, start, args.rate)
                await queries.enqueue(ENTRYPOINT, payload(n), 0)
                commits[n] = time.time()
            if phase == "warmup":
                await asyncio.sleep(1.0)
    finally:
        await conn.close()
    return {"commits": commits}


async def work(args: argparse.Namespace) -> dict[str, Any]:
    global LEDGER
    if args.no_listen:
        raise SystemExit("PgQueuer has no poll-only mode")
    LEDGER = Ledger(args.total, record_starts=args.record_starts)
    conn = await asyncpg.connect(args.target)
    try:
        pgq = PgQueuer(AsyncpgDriver(conn))
        stop_after = (args.stop_after or args.total) if args.mode == "count" else 0

        limit = args.plan["limit"] if args.plan and args.plan["workload"] == "concurrency" else 0

        @pgq.entrypoint(ENTRYPOINT, concurrency_limit=limit)  # 0: unlimited
        async def noop(job: Job) -> None:
            """Does nothing but record that it ran, so that lost or duplicated runs show up."""
            started = time.time()
            assert job.payload is not None
            if LEDGER.ran(json.loads(job.payload)["n"], started) >= stop_after > 0:
                pgq.shutdown.set()

        if args.mode == "until":
            asyncio.get_running_loop().call_later(
                max(0.0, args.until - time.time()), pgq.shutdown.set
            )
        options: dict[str, Any] = {}
        if args.poll_interval is not None:
            options["dequeue_timeout"] = timedelta(seconds=args.poll_interval)
        ready()
        await pgq.run(
            batch_size=max(1, args.concurrency // 2),
            max_concurrent_tasks=args.concurrency,
            mode=QueueExecutionMode.drain
            if args.mode == "drain"
            else QueueExecutionMode.continuous,
            log_aggregation_interval=timedelta(0),
            **options,
        )
    finally:
        await conn.close()
    return LEDGER.report()


async def verify(args: argparse.Namespace) -> dict[str, Any]:
    conn = await asyncpg.connect(args.target)
    try:
        queue = await conn.fetch("SELECT status::text AS s, count(*) AS n FROM pgqueuer GROUP BY 1")
        log = await conn.fetch(
            "SELECT status::text AS s, count(*) AS n FROM pgqueuer_log GROUP BY 1"
        )
        span = await conn.fetchrow(
            "SELECT extract(epoch FROM min(created))::float8 AS first,"
            "       extract(epoch FROM max(created))::float8 AS last"
            "  FROM pgqueuer_log WHERE status = 'successful'"
        )
        histogram: dict[str, int] = {}
        if args.histogram:
            buckets = await conn.fetch(
                "SELECT floor(extract(epoch FROM created) * 10)::bigint AS b, count(*) AS n"
                "  FROM pgqueuer_log WHERE status = 'successful' GROUP BY 1"
            )
            histogram = {str(r["b"]): int(r["n"]) for r in buckets}
    finally:
        await conn.close()
    in_queue = {r["s"]: int(r["n"]) for r in queue}
    logged = {r["s"]: int(r["n"]) for r in log}
    completed = logged.get("successful", 0)
    # A job picked more often than it succeeded ran (or started) twice.
    repicked = max(0, logged.get("picked", 0) - completed - in_queue.get("picked", 0))
    failures = sum(logged.get(s, 0) for s in ("exception", "failed", "canceled", "deleted"))
    return {
        "completed": completed,
        "left": in_queue.get("queued", 0),
        "in_flight": in_queue.get("picked", 0),
        "bad": failures + repicked,
        "other": {
            **{f"queue_{k}": v for k, v in in_queue.items() if k not in ("queued", "picked")},
            **{f"log_{k}": v for k, v in logged.items() if k != "successful"},
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
