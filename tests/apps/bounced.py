"""Tasks for the PgBouncer tests (tests/test_pgbouncer.py), run by a worker subprocess.

The worker reaches pgqueue's database through the bouncer ($PGQUEUE_DSN); what the tasks
themselves write goes to a ledger table over a direct connection
($PGQUEUE_TEST_LEDGER_DSN), so each run of a job is counted independently of pgqueue's own
rows and of the bouncer (a task's own SQL through a transaction pooler is the task's
business, not the queue's).
"""

from __future__ import annotations

import os
import threading
import time

import psycopg

import pgqueue

app = pgqueue.App()  # PGQUEUE_DSN (the bouncer), set by the test
_local = threading.local()


def _conn() -> psycopg.Connection[tuple[object, ...]]:
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed or conn.broken:
        conn = psycopg.connect(
            os.environ.get("PGQUEUE_TEST_LEDGER_DSN") or app.dsn,
            autocommit=True,
            prepare_threshold=None,
        )
        _local.conn = conn
    return conn


def _write(job_id: int, n: int) -> None:
    _conn().execute(
        "INSERT INTO ledger (job_id, n, pid) VALUES (%s, %s, %s)", [job_id, n, os.getpid()]
    )


@app.task(name="bounced.record", max_attempts=3)
def record(n: int) -> int:
    _write(pgqueue.current_job().id, n)
    return n


@app.task(name="bounced.slow", max_attempts=1)
def slow(seconds: float, n: int = 0) -> dict[str, float]:
    time.sleep(seconds)
    _write(pgqueue.current_job().id, n)
    return {"slept": seconds}
