"""Celery side of benchmarks/peers.py (runs in benchmarks/.venvs/celery), Redis broker.

Here the "target" is a Redis broker URL plus a queue name unique to the run
(`redis://host:port/db#queue`), so runs share nothing; `teardown` deletes the run's keys.

APIs used: `Task.apply_async(kwargs=...)` (one message per job: Celery has no bulk-insert
call, so `enqueue-bulk` publishes over one producer from `app.producer_or_acquire()`, and
`enqueue-single` lets each call take a producer from the app's pool), and `app.Worker(pool=
"threads", concurrency=C)` started in this process, so that a worker is one process with C
slots like the others (prefetch multiplier 4). Celery has no burst mode: every task
increments a per-run Redis counter (`<queue>:done`, INCR), and each worker process exits
once that counter reaches the number of jobs, so several worker processes can drain one
queue. Delivery is by blocking pop on the Redis list: there is no poll-only mode.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Any

import redis
from _protocol import Ledger, paced, ready, serve  # the script's folder is on sys.path
from celery import Celery

app = Celery("bench_peer")
LEDGER = Ledger(0)
COUNTER: dict[str, Any] = {"client": None, "key": ""}


@app.task(name="bench_noop", ignore_result=True)
def noop(n: int) -> None:
    """Does nothing but record that it ran, so that lost or duplicated runs show up."""
    LEDGER.ran(n, time.time())
    COUNTER["client"].incr(COUNTER["key"])


def configure(target: str) -> tuple[str, redis.Redis]:
    broker, _, queue = target.partition("#")
    app.conf.update(
        broker_url=broker,
        task_default_queue=queue,
        task_ignore_result=True,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        worker_prefetch_multiplier=4,
        worker_redirect_stdouts=False,
    )
    client = redis.Redis.from_url(broker)
    COUNTER["client"] = client
    COUNTER["key"] = f"{queue}:done"
    return queue, client


def enqueue_bulk(args: argparse.Namespace) -> dict[str, Any]:
    queue, client = configure(args.target)
    with app.producer_or_acquire() as producer:
        producer.connection.ensure_connection()
        start = time.perf_counter()
        for i in range(args.jobs):
            noop.apply_async(kwargs={"n": i}, producer=producer)
        elapsed = time.perf_counter() - start
    return {"enqueued": int(client.llen(queue)), "elapsed_s": elapsed}


def enqueue_single(args: argparse.Namespace) -> dict[str, Any]:
    queue, client = configure(args.target)
    noop.apply_async(kwargs={"n": 0})  # untimed: it opens the pool's connection
    start = time.perf_counter()
    for i in range(1, args.jobs):
        noop.apply_async(kwargs={"n": i})
    elapsed = time.perf_counter() - start
    return {"enqueued": int(client.llen(queue)), "elapsed_s": elapsed, "timed_jobs": args.jobs - 1}


def latency_enqueue(args: argparse.Namespace) -> dict[str, Any]:
    configure(args.target)
    commits: dict[int, float] = {}
    for phase, numbers in (
        ("warmup", range(args.warmup)),
        ("measured", range(args.warmup, args.warmup + args.jobs)),
    ):
        start = time.perf_counter()
        for index, n in enumerate(numbers):
            paced(index, start, args.rate)
            noop.apply_async(kwargs={"n": n})
            commits[n] = time.time()
        if phase == "warmup":
            time.sleep(1.0)
    return {"commits": commits}


def report_when_done(client: redis.Redis, key: str, total: int) -> None:
    while int(client.get(key) or 0) < total:
        time.sleep(0.01)
    time.sleep(0.5)  # a duplicate delivery arriving just after the last job would show here
    sys.__stdout__.write(json.dumps(LEDGER.report()) + "\n")
    sys.__stdout__.flush()
    os._exit(0)  # Celery's worker has no "stop when empty": leave without its shutdown


def work(args: argparse.Namespace) -> dict[str, Any]:
    global LEDGER
    if args.no_listen:
        raise SystemExit("Celery with Redis has no poll-only mode")
    if args.mode == "until":
        raise SystemExit("Celery: held-xmin does not apply (no PostgreSQL)")
    queue, client = configure(args.target)
    LEDGER = Ledger(args.total, record_starts=args.record_starts)
    threading.Thread(
        target=report_when_done, args=(client, COUNTER["key"], args.total), daemon=True
    ).start()
    worker = app.Worker(
        pool="threads",
        concurrency=args.concurrency,
        queues=[queue],
        loglevel="WARNING",
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
        quiet=True,
    )
    ready()
    worker.start()
    raise SystemExit("worker stopped before every job ran")


def verify(args: argparse.Namespace) -> dict[str, Any]:
    queue, client = configure(args.target)
    return {
        "completed": int(client.get(COUNTER["key"]) or 0),
        "left": int(client.llen(queue)),
        "in_flight": 0,
        "other": {},
        "first_completion": None,
        "last_completion": None,
        "histogram": {},
    }


def teardown(args: argparse.Namespace) -> dict[str, Any]:
    queue, client = configure(args.target)
    client.delete(queue, COUNTER["key"])
    return {}


if __name__ == "__main__":
    serve(
        {
            "setup": teardown,
            "teardown": teardown,
            "enqueue-bulk": enqueue_bulk,
            "enqueue-single": enqueue_single,
            "latency-enqueue": latency_enqueue,
            "work": work,
            "verify": verify,
        }
    )
