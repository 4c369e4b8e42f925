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

Feature workloads (`--plan`): `rate` sets the task's `rate_limit`, which Celery applies per
worker instance (not across workers), so each of the P worker processes gets R/P per second;
`workflow` is a chord: the parent task starts `chord(N children)(join)`, which needs a result
backend (the same Redis, its keys prefixed with the run's queue so that `teardown` removes
them). Celery has no per-key limit or fairness, no limit across workers and no topics.
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
from celery import Celery, chord

app = Celery("bench_peer")
LEDGER = Ledger(0)
COUNTER: dict[str, Any] = {"client": None, "key": ""}


@app.task(name="bench_noop", ignore_result=True)
def noop(n: int) -> None:
    """Does nothing but record that it ran, so that lost or duplicated runs show up."""
    LEDGER.ran(n, time.time())
    COUNTER["client"].incr(COUNTER["key"])


@app.task(name="bench_child", ignore_result=False)
def child(n: int) -> int:
    """A workflow child: its result is what the chord's join collects."""
    started = time.time()
    LEDGER.ran(n, started)
    LEDGER.mark("child_first_start", started, keep="first")
    COUNTER["client"].incr(COUNTER["key"])
    LEDGER.mark("child_last_done", time.time())
    return n


@app.task(name="bench_join", ignore_result=True)
def join(results: list[int], n: int) -> None:
    """The workflow's join: runs once every child has; number n + 1 in the ledger."""
    LEDGER.ran(n + 1, time.time())
    if sorted(results) != list(range(n)):
        LEDGER.ran(-1, time.time())  # an unknown execution: the exactly-once check fails
    COUNTER["client"].incr(COUNTER["key"])
    LEDGER.mark("join_done", time.time())


@app.task(name="bench_fan", ignore_result=True)
def fan(n: int) -> None:
    """The workflow's parent (number n in the ledger): fans out to n children and a join."""
    LEDGER.ran(n, time.time())
    chord(child.s(i) for i in range(n))(join.s(n))
    COUNTER["client"].incr(COUNTER["key"])


def configure(target: str, plan: dict[str, Any] | None = None) -> tuple[str, redis.Redis]:
    broker, _, queue = target.partition("#")
    if plan and plan["workload"] == "workflow":
        app.conf.update(
            result_backend=broker,
            result_backend_transport_options={"global_keyprefix": f"{queue}:"},
        )
    if plan and plan["workload"] == "rate":
        # Celery's rate_limit is per worker instance: R overall over P workers is R/P each.
        per_worker = plan["rate"] / plan["processes"]
        app.conf.task_annotations = {"bench_noop": {"rate_limit": f"{per_worker:g}/s"}}
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


def enqueue_feature(args: argparse.Namespace) -> dict[str, Any]:
    plan = args.plan
    queue, client = configure(args.target, plan)
    if plan["workload"] == "rate":
        args.jobs = plan["jobs"]
        return enqueue_bulk(args)
    if plan["workload"] == "workflow":
        submitted = time.time()
        fan.apply_async(kwargs={"n": plan["children"]})
        return {"enqueued": int(client.llen(queue)), "submitted_at": submitted}
    raise SystemExit(f"Celery has no feature for {plan['workload']}")


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


def report_at(until: float) -> None:
    """Mode until (the rate workload): leave at that time. Messages the worker had prefetched
    stay in the transport's unacked set, which `verify` counts as still queued (Redis restores
    them to the queue after the visibility timeout)."""
    time.sleep(max(0.0, until - time.time()))
    sys.__stdout__.write(json.dumps(LEDGER.report()) + "\n")
    sys.__stdout__.flush()
    os._exit(0)


def work(args: argparse.Namespace) -> dict[str, Any]:
    global LEDGER
    if args.no_listen:
        raise SystemExit("Celery with Redis has no poll-only mode")
    if args.mode == "until" and not args.plan:
        raise SystemExit("Celery: held-xmin does not apply (no PostgreSQL)")
    queue, client = configure(args.target, args.plan)
    LEDGER = Ledger(args.total, record_starts=args.record_starts)
    if args.mode == "until":
        threading.Thread(target=report_at, args=(args.until,), daemon=True).start()
    else:
        threading.Thread(
            target=report_when_done,
            args=(client, COUNTER["key"], args.stop_after or args.total),
            daemon=True,
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


def unacked(client: redis.Redis, queue: str) -> int:
    """Messages of `queue` delivered to a worker that left without acknowledging them (kombu's
    `unacked` hash: delivery tag -> [message, exchange, routing key])."""
    held = 0
    for raw in client.hvals("unacked"):
        try:
            routing_key = json.loads(raw)[2]
        except (ValueError, IndexError, TypeError):
            continue
        held += routing_key == queue
    return held


def verify(args: argparse.Namespace) -> dict[str, Any]:
    queue, client = configure(args.target)
    return {
        "completed": int(client.get(COUNTER["key"]) or 0),
        "left": int(client.llen(queue)) + unacked(client, queue),
        "in_flight": 0,
        "other": {},
        "first_completion": None,
        "last_completion": None,
        "histogram": {},
    }


def teardown(args: argparse.Namespace) -> dict[str, Any]:
    queue, client = configure(args.target)
    client.delete(queue, COUNTER["key"])
    for tag, raw in client.hgetall("unacked").items():  # what a time-boxed worker left
        try:
            if json.loads(raw)[2] == queue:
                client.hdel("unacked", tag)
                client.zrem("unacked_index", tag)
        except (ValueError, IndexError, TypeError):
            continue
    stale = list(client.scan_iter(match=f"{queue}:*", count=1000))  # a workflow's results
    for start in range(0, len(stale), 1000):
        client.delete(*stale[start : start + 1000])
    return {}


if __name__ == "__main__":
    serve(
        {
            "setup": teardown,
            "teardown": teardown,
            "enqueue-bulk": enqueue_bulk,
            "enqueue-single": enqueue_single,
            "enqueue-feature": enqueue_feature,
            "latency-enqueue": latency_enqueue,
            "work": work,
            "verify": verify,
        }
    )
