"""Rate-limit a third-party API per customer, fairly (docs/flow-control.md).

The API allows 20 calls a second overall, 4 a second and 2 in flight per customer. One big
customer has 40 orders waiting, five small ones 5 each. Run it against any database:

    PGQUEUE_DSN=postgresql://localhost/mydb python docs/examples/per_customer_api.py

It works in a schema of its own (pgqueue_flow_example, dropped at the start), runs two
workers in threads for a few seconds, and prints when each customer's last export finished
and the most calls the "API" saw in any second.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict

import psycopg

import pgqueue
from pgqueue.testing import worker_thread

SCHEMA = "pgqueue_flow_example"
app = pgqueue.App(os.environ.get("PGQUEUE_DSN"), schema=SCHEMA)

calls: list[tuple[float, str]] = []
finished: dict[str, float] = {}
in_flight: defaultdict[str, int] = defaultdict(int)
peak_in_flight = 0
lock = threading.Lock()


def call_the_api(customer: str, order_id: int) -> None:
    """Stands in for the real API: records each call, takes 50 ms."""
    global peak_in_flight
    with lock:
        calls.append((time.monotonic(), customer))
        in_flight[customer] += 1
        peak_in_flight = max(peak_in_flight, in_flight[customer])
    time.sleep(0.05)
    with lock:
        in_flight[customer] -= 1
        finished[customer] = time.monotonic()


@app.task(name="example.export_order", queue="exports", max_attempts=5)
def export_order(customer: str, order_id: int) -> None:
    call_the_api(customer, order_id)


def main() -> None:
    with psycopg.connect(app.dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    app.migrate()
    app.configure_queue("exports", rate="20/s", group_rate="4/s", group_concurrency=2, fair=True)
    export_order.options(group_key="big-customer").enqueue_many(
        [{"customer": "big-customer", "order_id": i} for i in range(40)]
    )
    for c in ("a", "b", "c", "d", "e"):
        export_order.options(group_key=c).enqueue_many(
            [{"customer": c, "order_id": i} for i in range(5)]
        )
    start = time.monotonic()
    with worker_thread(app, concurrency=8), worker_thread(app, concurrency=8):
        while app.count_unfinished(queue="exports"):
            time.sleep(0.1)
    for customer, at in sorted(finished.items(), key=lambda kv: kv[1]):
        print(f"{customer:>13}: last export at +{at - start:.1f} s")
    times = sorted(t for t, _ in calls)
    busiest = max(sum(1 for u in times if t <= u < t + 1) for t in times)
    print(f"most API calls in any second: {busiest} (limit 20; measured when each call began)")
    print(f"most calls in flight for one customer: {peak_in_flight} (limit 2)")
    print(app.queue_limits("exports")[0])
    app.close()


if __name__ == "__main__":
    main()
