"""An export as a durable workflow: fetch a customer's orders once, fan out one job per page
to a (slow, flaky, rate-limited) partner API, join the receipts, upload the bundle.

Run it:  PGQUEUE_DSN=postgresql://localhost/mydb python docs/examples/export_workflow.py

It migrates the schema, enqueues one export, runs a worker in a thread of this process until
the export is done, and prints its result (in production the worker is `pgqueue worker`).
Kill it at any point and run it again: no finished step runs twice, no page is sent twice,
and the export finishes.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import pgqueue
from pgqueue.testing import worker_thread

app = pgqueue.App(os.environ.get("PGQUEUE_DSN"))
PAGE = 100


def fetch_orders(customer_id: int) -> list[int]:
    """Stands in for a slow query against the business database."""
    time.sleep(0.05)
    return list(range(customer_id * 1000, customer_id * 1000 + 250))


def upload(receipts: list[str]) -> str:
    time.sleep(0.05)
    return f"s3://exports/{len(receipts)}-receipts.json"


@app.task(max_attempts=10)
def send_page(orders: list[int]) -> str:
    """One call to the partner API. It answers 429 now and then: honour its Retry-After."""
    if random.random() < 0.2:
        raise pgqueue.Retry(after=0.2, reason="429 Too Many Requests")
    # The job id is a stable idempotency key for the partner: a retried page is the same call.
    return f"receipt-{pgqueue.current_job().id}-{len(orders)}"


@app.task
def export(customer_id: int) -> dict[str, Any]:
    ctx = pgqueue.current_job()
    orders = ctx.step("fetch", fetch_orders, customer_id=customer_id)  # runs once
    pages = [orders[i : i + PAGE] for i in range(0, len(orders), PAGE)]
    jobs = ctx.map(send_page, [{"orders": p} for p in pages])  # spawned once
    receipts = ctx.gather(jobs)  # not all done: suspend, free the slot, resume later
    location = ctx.step("upload", upload, receipts=receipts)
    return {"pages": len(pages), "location": location}


def main() -> None:
    app.migrate()
    job = export.enqueue(customer_id=7)
    with worker_thread(app, concurrency=4):
        print(job.wait(timeout=60))


if __name__ == "__main__":
    main()
