"""Tasks for multi-process tests: every execution is written to a ledger table outside
pgqueue's schema, so a checker can count runs per job independently of pgqueue's own rows."""

from __future__ import annotations

import os
import time

import psycopg

import pgqueue
from tests.apps._conn import forget, ledger_conn

app = pgqueue.App()  # PGQUEUE_DSN, set by the test


def _conn() -> psycopg.Connection[tuple[object, ...]]:
    return ledger_conn(app.dsn)


def _write(job_id: int, n: int) -> None:
    # The chaos tests restart the server under this task: a connection it opened before the
    # restart is dead, which is the task's problem, not the queue's. Reconnect once.
    try:
        _conn().execute(
            "INSERT INTO ledger (job_id, n, pid) VALUES (%s, %s, %s)", [job_id, n, os.getpid()]
        )
    except psycopg.OperationalError:
        forget()
        _conn().execute(
            "INSERT INTO ledger (job_id, n, pid) VALUES (%s, %s, %s)", [job_id, n, os.getpid()]
        )


@app.task(name="ledger.record", max_attempts=10)
def record(n: int) -> int:
    _write(pgqueue.current_job().id, n)
    return n


@app.task(name="ledger.sleep")
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    _write(pgqueue.current_job().id, 0)
    return seconds


@app.task(name="ledger.poison", max_attempts=10)
def poison() -> None:
    # Takes its whole process down, every time: the job must end `failed`, not loop forever.
    os.kill(os.getpid(), 9)
