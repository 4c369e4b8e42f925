"""PgQueuer drain worker for benchmarks/peers.py (runs in benchmarks/.venvs/pgqueuer).

Jobs are enqueued with the list form of `Queries.enqueue` (one statement per chunk); the
worker runs `PgQueuer.run(mode=drain)`, which returns once the queue is empty and in-flight
jobs have finished. PgQueuer deletes a finished job from its queue table and writes its
outcome to pgqueuer_log; log aggregation is disabled so those rows stay countable.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import asyncpg
from _protocol import serve  # the script's folder is on sys.path
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job
from pgqueuer.queries import Queries
from pgqueuer.types import QueueExecutionMode

STATE: dict[str, Any] = {"executions": 0, "seen": set(), "first_start": None, "last_done": None}
ENTRYPOINT = "bench_noop"


async def noop(job: Job) -> None:
    """Does nothing but record that it ran, so that lost or duplicated runs show up."""
    now = time.time()
    if STATE["first_start"] is None:
        STATE["first_start"] = now
    assert job.payload is not None
    STATE["executions"] += 1
    STATE["seen"].add(json.loads(job.payload)["n"])
    STATE["last_done"] = time.time()


async def enqueue(dsn: str, jobs: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        queries = Queries(AsyncpgDriver(conn))
        await queries.install()
        ids: list[Any] = []
        chunk = 5000
        for start in range(0, jobs, chunk):
            numbers = range(start, min(jobs, start + chunk))
            ids += await queries.enqueue(
                [ENTRYPOINT] * len(numbers),
                [json.dumps({"n": i}).encode() for i in numbers],
                [0] * len(numbers),
            )
    finally:
        await conn.close()
    return {"enqueued": len(ids)}


async def work(dsn: str, jobs: int, concurrency: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        pgq = PgQueuer(AsyncpgDriver(conn))
        pgq.entrypoint(ENTRYPOINT, concurrency_limit=concurrency)(noop)
        await pgq.run(
            batch_size=concurrency,
            mode=QueueExecutionMode.drain,
            log_aggregation_interval=timedelta(0),
        )
    finally:
        await conn.close()
    check = await asyncpg.connect(dsn)
    try:
        left = await check.fetchval("SELECT count(*) FROM pgqueuer")
        rows = await check.fetch(
            "SELECT status::text AS s, count(*) AS n FROM pgqueuer_log GROUP BY 1"
        )
    finally:
        await check.close()
    log = {row["s"]: int(row["n"]) for row in rows}
    return {
        "executions": STATE["executions"],
        "distinct": len(STATE["seen"]),
        "first_start": STATE["first_start"],
        "last_done": STATE["last_done"],
        "completed": log.get("successful", 0),
        "db_states": {"left_in_queue": int(left), **{f"log_{k}": v for k, v in log.items()}},
    }


if __name__ == "__main__":
    serve(enqueue, work)
