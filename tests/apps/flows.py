"""Workflow tasks for multi-process tests. Every step and every run writes a row to a ledger
table outside pgqueue's schema (`flow_ledger`), so a checker can count what really ran
independently of pgqueue's own bookkeeping."""

from __future__ import annotations

import os
import time
from typing import Any

import psycopg

import pgqueue
from tests.apps._conn import ledger_conn

app = pgqueue.App()  # PGQUEUE_DSN, set by the test

LEDGER = (
    "CREATE TABLE flow_ledger (job_id bigint NOT NULL, what text NOT NULL,"
    " pid int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())"
)


def _conn() -> psycopg.Connection[tuple[object, ...]]:
    return ledger_conn(app.dsn)


def note(what: str) -> None:
    _conn().execute(
        "INSERT INTO flow_ledger (job_id, what, pid) VALUES (%s, %s, %s)",
        [pgqueue.current_job().id, what, os.getpid()],
    )


@app.task(name="flows.root")
def root(day: str) -> dict[str, Any]:
    note("root")
    return {"day": day}


@app.task(name="flows.part")
def part(n: int) -> int:
    note(f"part:{n}")
    return n * n


@app.task(name="flows.join")
def join() -> int:
    note("join")
    results = pgqueue.current_job().parent_results
    return sum(v for v in results.values() if isinstance(v, int))


@app.task(name="flows.broken", max_attempts=1)
def broken() -> None:
    note("broken")
    raise pgqueue.Fail("the source is gone")


def _fetch(seconds: float) -> list[int]:
    note("fetch")
    time.sleep(seconds)  # long enough to be killed in the middle of the next step
    return [1, 2, 3]


def _render(rows: list[int]) -> int:
    note("render")
    return sum(rows)


@app.task(name="flows.stepped", max_attempts=5)
def stepped(hang: float = 0.0) -> int:
    ctx = pgqueue.current_job()
    rows = ctx.step("fetch", _fetch, seconds=0.0)
    total = ctx.step("render", _render, rows=rows)
    # Killed here on the first run: the two steps above must not run again.
    marker = ctx.step("hang", _hang, seconds=hang)
    return int(total) + int(marker)


def _hang(seconds: float) -> int:
    note("hang")
    time.sleep(seconds)
    return 0


@app.task(name="flows.square")
def square(n: int, pause: float = 0.0) -> int:
    note(f"square:{n}")
    time.sleep(pause)
    return n * n


@app.task(name="flows.fan", max_attempts=3)
def fan(n: int, pause: float = 0.0) -> int:
    ctx = pgqueue.current_job()
    note("fan")
    children = ctx.map(square, [{"n": i, "pause": pause} for i in range(n)])
    squares = ctx.gather(children)
    note("joined")
    return sum(squares)


def _runs(what: str) -> int:
    """How many times this job has noted `what`: which run of it this is."""
    row = (
        _conn()
        .execute(
            "SELECT count(*) FROM flow_ledger WHERE job_id = %s AND what = %s",
            [pgqueue.current_job().id, what],
        )
        .fetchone()
    )
    assert row is not None
    return int(str(row[0]))


@app.task(name="flows.fan_pause", max_attempts=3)
def fan_pause(pauses: list[float], then: str, seconds: float) -> int:
    """Spawn children, then sleep or fail once before gathering them: the children that end
    meanwhile count down a parent that is `scheduled` or `retrying`, not `waiting`."""
    ctx = pgqueue.current_job()
    note("fan")
    children = ctx.map(square, [{"n": i, "pause": p} for i, p in enumerate(pauses)])
    if then == "sleep":
        ctx.sleep(seconds)
    elif _runs("fan") == 1:
        raise pgqueue.Retry(after=seconds)
    squares = ctx.gather(children)
    note("joined")
    return sum(squares)


@app.task(name="flows.flaky", max_attempts=1)
def flaky(n: int) -> int:
    """Fails its first run for good (an operator then retries it); succeeds after."""
    note("flaky")
    if _runs("flaky") == 1:
        raise pgqueue.Fail("not yet")
    return n * n


@app.task(name="flows.retry_once", max_attempts=2)
def retry_once(n: int) -> int:
    """Fails its first attempt, which its attempts allow to be retried; succeeds after."""
    note("retry_once")
    if _runs("retry_once") == 1:
        raise pgqueue.Retry(after=0.2)
    return n * n


@app.task(name="flows.fan_mixed")
def fan_mixed(child: str, pause: float) -> int:
    """A slow child and one that fails before it succeeds (`flows.flaky` or
    `flows.retry_once`), gathered together."""
    ctx = pgqueue.current_job()
    note("fan")
    kids = [ctx.spawn(square, n=3, pause=pause), ctx.spawn(child, n=2)]
    squares = ctx.gather(kids)
    note("joined")
    return sum(squares)


@app.task(name="flows.fan_async")
async def fan_async(n: int) -> int:
    ctx = pgqueue.current_job()
    children = await ctx.map_async(square, [{"n": i} for i in range(n)])
    return sum(await ctx.gather_async(children))


@app.task(name="flows.fan_fails", max_attempts=1)
def fan_fails() -> str:
    ctx = pgqueue.current_job()
    child = ctx.spawn(broken)
    try:
        ctx.gather([child])
    except pgqueue.JobFailed as exc:
        note("caught")
        return f"child {exc.job_id} {exc.state}"
    return "unreachable"


@app.task(name="flows.sleeper")
def sleeper(seconds: float) -> str:
    ctx = pgqueue.current_job()
    note(f"run:{ctx.attempt}")
    ctx.sleep(seconds)
    note("woke")
    return "rested"


_snoozes: dict[int, int] = {}


@app.task(name="flows.snoozer", max_attempts=1)
def snoozer(times: int) -> int:
    job_id = pgqueue.current_job().id
    note("run")
    rows = (
        _conn()
        .execute("SELECT count(*) FROM flow_ledger WHERE job_id = %s AND what = 'run'", [job_id])
        .fetchone()
    )
    assert rows is not None
    if int(str(rows[0])) <= times:
        raise pgqueue.Snooze(0.2)
    return int(str(rows[0]))


@app.task(name="flows.pay")
def pay(order: int, lose_lease: bool = False) -> str:
    """An effect in the caller's transaction, completed with it: exactly once."""
    ctx = pgqueue.current_job()
    with psycopg.connect(app.dsn) as conn:
        conn.execute("INSERT INTO payments (order_id) VALUES (%s)", [order])
        if lose_lease:
            # What a rescue and a new claim would do: the lease moves on.
            with psycopg.connect(app.dsn, autocommit=True) as other:
                other.execute(
                    "UPDATE pgqueue.jobs SET lease = gen_random_uuid() WHERE id = %s", [ctx.id]
                )
        try:
            ctx.complete(conn, result={"paid": order})
        except pgqueue.LeaseLost:
            conn.rollback()
            note("lease lost")
            raise
    return "done"


@app.task(name="flows.misuse", max_attempts=1)
def misuse(stranger: int) -> list[str]:
    """Each misuse of the workflow tools is a clear, typed error raised inside the task."""
    ctx = pgqueue.current_job()
    errors = []
    ctx.step("once", lambda: 1)
    for attempt in (
        lambda: ctx.step("once", lambda: 2),
        lambda: ctx.gather([stranger]),
        lambda: ctx.step("not json", lambda: {1, 2}),
        lambda: ctx.sleep(-1),
    ):
        try:
            attempt()
        except pgqueue.ValidationError as exc:
            errors.append(str(exc))
    return errors
