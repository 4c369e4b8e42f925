"""Tasks for the flow-control tests: each run writes its start and end (the database clock,
on the task's own connection) to a ledger table outside pgqueue's schema, so a checker can
count how many ran at once, and how many started in any window, without trusting pgqueue's
own rows."""

from __future__ import annotations

import os
import threading
import time

import psycopg

import pgqueue

app = pgqueue.App()  # PGQUEUE_DSN, set by the test
_local = threading.local()

# The ledger table (created by the test): flow_ledger (job_id, attempt, grp, pid, started,
# ended).


def _conn() -> psycopg.Connection[tuple[object, ...]]:
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed or conn.broken:
        conn = psycopg.connect(app.dsn, autocommit=True)
        _local.conn = conn
    return conn


@app.task(name="flow.work", queue="flow", max_attempts=5)
def work(seconds: float = 0.0, grp: str | None = None, first_seconds: float | None = None) -> None:
    """Sleep `seconds` (`first_seconds` on the first attempt, if given), writing the run."""
    ctx = pgqueue.current_job()
    conn = _conn()
    conn.execute(
        "INSERT INTO flow_ledger (job_id, attempt, grp, pid, started)"
        " VALUES (%s, %s, %s, %s, clock_timestamp())",
        [ctx.id, ctx.attempt, grp, os.getpid()],
    )
    time.sleep(first_seconds if first_seconds is not None and ctx.attempt == 1 else seconds)
    conn.execute(
        "UPDATE flow_ledger SET ended = clock_timestamp() WHERE job_id = %s AND attempt = %s",
        [ctx.id, ctx.attempt],
    )
