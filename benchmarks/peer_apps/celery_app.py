"""Celery drain worker for benchmarks/peers.py (runs in benchmarks/.venvs/celery).

Here the "target" is a Redis broker URL plus a queue name unique to the run
(`redis://host:port/db#queue`), so runs do not share a queue and nothing else in Redis is
touched. Jobs are published over one producer connection (Celery has no bulk-insert call);
the worker is one process with the threads pool, so that it is one process with concurrency
10 like the others. Celery has no burst mode: when the worker has seen every job run, it
reports, checks the queue is empty, deletes its queue key and exits the process.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

from celery import Celery

STATE: dict[str, Any] = {"executions": 0, "seen": set(), "first_start": None, "last_done": None}
LOCK = threading.Lock()
DONE = threading.Event()
EXPECTED = {"jobs": 0}

app = Celery("bench_peer")


@app.task(name="bench_noop", ignore_result=True)
def noop(n: int) -> None:
    """Does nothing but record that it ran, so that lost or duplicated runs show up."""
    now = time.time()
    with LOCK:
        if STATE["first_start"] is None:
            STATE["first_start"] = now
        STATE["executions"] += 1
        STATE["seen"].add(n)
        STATE["last_done"] = time.time()
        if STATE["executions"] >= EXPECTED["jobs"]:
            DONE.set()


def configure(target: str) -> str:
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
    return queue


def enqueue(target: str, jobs: int) -> dict[str, Any]:
    configure(target)
    with app.producer_or_acquire() as producer:
        for i in range(jobs):
            noop.apply_async(kwargs={"n": i}, producer=producer)
    with app.connection_for_write() as conn:
        queued = conn.default_channel.client.llen(app.conf.task_default_queue)
    return {"enqueued": int(queued)}


def report_when_done(jobs: int) -> None:
    DONE.wait()
    with LOCK:
        result = {
            "executions": STATE["executions"],
            "distinct": len(STATE["seen"]),
            "first_start": STATE["first_start"],
            "last_done": STATE["last_done"],
        }
    time.sleep(0.5)  # a duplicate delivery arriving just after the last job would show here
    with LOCK:
        result["executions"] = STATE["executions"]
        result["distinct"] = len(STATE["seen"])
    with app.connection_for_write() as conn:
        client = conn.default_channel.client
        left = int(client.llen(app.conf.task_default_queue))
        client.delete(app.conf.task_default_queue)
    result["completed"] = result["distinct"] if result["executions"] == jobs else 0
    result["db_states"] = {"left_in_queue": left}
    # The worker redirects sys.stdout into its logger; the harness reads the real stdout.
    sys.__stdout__.write(json.dumps(result) + "\n")
    sys.__stdout__.flush()
    os._exit(0)


def work(target: str, jobs: int, concurrency: int) -> None:
    queue = configure(target)
    EXPECTED["jobs"] = jobs
    threading.Thread(target=report_when_done, args=(jobs,), daemon=True).start()
    worker = app.Worker(
        pool="threads",
        concurrency=concurrency,
        queues=[queue],
        loglevel="WARNING",
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
        quiet=True,
    )
    worker.start()


def main(argv: list[str]) -> None:
    command, target, jobs = argv[0], argv[1], int(argv[2])
    if command == "enqueue":
        print(json.dumps(enqueue(target, jobs)), flush=True)
    elif command == "work":
        work(target, jobs, int(argv[3]))
        raise SystemExit("worker stopped before every job ran")
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
