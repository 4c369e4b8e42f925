"""A worker app with schedules, for multi-process tests: every run of a scheduled job is
written to a table outside pgqueue's schema (`slot_runs`), with its slot and process, so a
checker can count jobs per slot independently of pgqueue's own rows.

$PGQUEUE_TEST_SCHEDULES lists the schedules: `name=cron` pairs separated by `;`, every one
with catch_up="all" (so a slot missed during a leader change is caught up, not skipped).
"""

from __future__ import annotations

import os

import psycopg

import pgqueue

app = pgqueue.App()  # PGQUEUE_DSN, set by the test


@app.task(name="sched.tick")
def tick(schedule: str) -> None:
    ctx = pgqueue.current_job()
    with psycopg.connect(app.dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO slot_runs (job_id, schedule, slot, pid) VALUES (%s, %s, %s, %s)",
            [ctx.id, schedule, ctx.scheduled_for, os.getpid()],
        )


for entry in filter(None, os.environ.get("PGQUEUE_TEST_SCHEDULES", "").split(";")):
    name, cron = entry.split("=", 1)
    app.periodic(tick, cron, name=name, args={"schedule": name}, catch_up="all")
