"""`pgqueue demo`: the whole product on one screen, on an embedded PostgreSQL if need be."""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn

import pgqueue
from pgqueue.testing import worker_thread

from ._output import fail, redact_dsn
from ._tables import limits_table, queue_table, schedules_table, subscriptions_table

#: Retries in the demo wait about a second, so that a flaky job visibly recovers.
FAST_RETRY = pgqueue.RetryPolicy(base=0.5, factor=2.0, max_delay=2.0, jitter=0.2)

#: The demo's own schema, whatever database it runs on: it never touches a user's queues
#: (their workers once took demo jobs from `pgqueue` and failed them with UnknownTask).
DEMO_SCHEMA = "pgqueue_demo"


def embedded_dsn(data_dir: str) -> str:
    """Start (or reuse) a PostgreSQL kept in `data_dir`, from the `pgserver` wheel."""
    try:
        from pgserver import get_server  # type: ignore[attr-defined]
    except ImportError:
        fail(
            "no database configured and the embedded PostgreSQL is not installed:"
            " pip install 'pgqueue[embedded]', or pass --dsn / set PGQUEUE_DSN"
        )
    path = Path(data_dir).resolve()
    path.mkdir(parents=True, exist_ok=True)
    server = get_server(path / "pgdata", cleanup_mode="stop")
    return str(server.get_uri())


def demo_app(dsn: str) -> pgqueue.App:
    app = pgqueue.App(dsn, schema=DEMO_SCHEMA)

    @app.task(name="demo.send_email", queue="emails")
    def send_email(to: str) -> dict[str, Any]:
        time.sleep(random.uniform(0.005, 0.05))
        return {"sent_to": to}

    @app.task(name="demo.build_report", queue="reports", timeout=30)
    async def build_report(report_id: int) -> str:
        await asyncio.sleep(random.uniform(1.0, 2.5))
        return f"report-{report_id}.pdf"

    @app.task(name="demo.call_webhook", queue="webhooks", max_attempts=4, retry=FAST_RETRY)
    def call_webhook(url: str, fail_times: int) -> str:
        # Fails its first attempts, like a flaky third-party API, then succeeds.
        if pgqueue.current_job().attempt <= fail_times:
            raise ConnectionError(f"{url} answered 503")
        return "200 OK"

    @app.task(name="demo.charge_card", queue="webhooks", max_attempts=3, retry=FAST_RETRY)
    def charge_card(order: int) -> None:
        raise ValueError(f"card declined for order {order}")

    # A workflow: fetch once (a durable step), fan out one job per page, join, upload.
    @app.task(name="demo.render_page", queue="reports")
    def render_page(page: int) -> str:
        time.sleep(random.uniform(0.05, 0.3))
        return f"page-{page}.pdf"

    @app.task(name="demo.export", queue="reports")
    def export(customer: int) -> dict[str, Any]:
        ctx = pgqueue.current_job()
        pages = ctx.step("fetch", lambda: list(range(8)))
        parts = ctx.map(render_page, [{"page": p} for p in pages])
        pdfs = ctx.gather(parts)  # suspends (no slot held) until every page is done
        return {"customer": customer, "bundle": ctx.step("upload", lambda: len(pdfs))}

    @app.task(name="demo.notify", queue="emails")
    def notify(customer: int) -> str:
        bundle = next(iter(pgqueue.current_job().parent_results.values()))
        return f"told customer {customer} about {bundle}"

    # Two subscribers to one topic, each on its own queue: one publish, two jobs.
    @app.task(name="demo.ship_order", queue="shipping", topics=["orders.created"])
    def ship_order(order_id: int) -> str:
        return f"order {order_id} shipped"

    @app.task(name="demo.audit", queue="audit", topics=["orders.*"])
    def audit(order_id: int) -> None:
        time.sleep(0.01)

    # A schedule every few seconds (cron with a seconds field): each slot makes one job,
    # which knows the slot it is for.
    @app.task(name="demo.tick", queue="schedules")
    def tick() -> str:
        slot = pgqueue.current_job().scheduled_for
        return f"slot {slot:%H:%M:%S}" if slot else "no slot"

    app.periodic(tick, "*/3 * * * * *", name="demo.every-3s")

    @app.task(name="demo.export_orders", queue="exports")
    def export_orders(customer: str, batch: int) -> str:
        # A third-party API that allows 20 calls a second, 4 per customer, at most 3 at once
        # per customer: the queue's limits (configured below) keep to it.
        time.sleep(random.uniform(0.02, 0.08))
        return f"{customer}: batch {batch} exported"

    return app


#: The demo's rate-limited, fair queue: what `pgqueue queue exports` shows.
EXPORT_LIMITS: dict[str, Any] = {
    "rate": "20/s",
    "group_rate": "4/s",
    "group_concurrency": 3,
    "fair": True,
    "max_depth": 10_000,
}


def enqueue_examples(app: pgqueue.App, quick_jobs: int) -> list[int]:
    tasks = app.tasks
    jobs = tasks["demo.send_email"].enqueue_many(
        [{"to": f"user{i}@example.com"} for i in range(quick_jobs)]
    )
    jobs += [tasks["demo.build_report"].enqueue(report_id=i) for i in range(4)]
    jobs += [
        tasks["demo.call_webhook"].enqueue(url=f"https://hooks.example/{i}", fail_times=i % 3)
        for i in range(6)
    ]
    jobs.append(tasks["demo.charge_card"].enqueue(order=1001))
    # One big customer and a few small ones on a rate-limited fair queue: the small ones
    # are not stuck behind the big one's backlog.
    app.configure_queue("exports", **EXPORT_LIMITS)
    exports = tasks["demo.export_orders"]
    jobs += exports.options(group_key="big-corp").enqueue_many(
        [{"customer": "big-corp", "batch": b} for b in range(24)]
    )
    for small in ("acme", "globex", "initech"):
        jobs += exports.options(group_key=small).enqueue_many(
            [{"customer": small, "batch": b} for b in range(3)]
        )
    jobs += [
        tasks["demo.send_email"].options(delay=3 + i).enqueue(to=f"later{i}@example.com")
        for i in range(3)
    ]
    export = tasks["demo.export"].enqueue(customer=42)
    jobs += [export, tasks["demo.notify"].options(after=[export]).enqueue(customer=42)]
    # The worker writes its tasks' subscriptions when it starts; written here too, so that
    # these first publishes already reach both subscribers.
    app.subscribe("orders.created", "demo.ship_order")
    app.subscribe("orders.*", "demo.audit")
    for order_id in (1001, 1002, 1003):
        jobs += app.publish("orders.created", {"order_id": order_id})
    return [j.id for j in jobs]


def run_demo(
    *,
    dsn: str | None,
    data_dir: str,
    quick_jobs: int,
    console: Console,
    keep_running: bool = False,
) -> None:
    """The command's console is passed in so the demo prints where the command does.

    Everything happens in the schema `pgqueue_demo`, whatever the database: a user's workers
    (schema `pgqueue`, or their own) never see a demo job, nor the demo theirs.
    """
    stop = threading.Event()  # set by SIGTERM (Ctrl-C raises KeyboardInterrupt)
    with _sigterm_sets(stop):
        try:
            _run_demo(dsn, data_dir, quick_jobs, console, keep_running, stop)
        except KeyboardInterrupt:
            stop.set()
        if stop.is_set():
            console.print("demo stopped before its jobs finished", highlight=False)
            raise typer.Exit(130)


def _run_demo(
    dsn: str | None,
    data_dir: str,
    quick_jobs: int,
    console: Console,
    keep_running: bool,
    stop: threading.Event,
) -> None:
    embedded = dsn is None
    if dsn is None:
        where = f"an embedded PostgreSQL in {Path(data_dir).resolve()}"
        console.print(f"pgqueue demo: schema {DEMO_SCHEMA} of {where}", highlight=False)
        console.print("starting the embedded PostgreSQL ...", highlight=False)
        dsn = embedded_dsn(data_dir)
    else:
        console.print(
            f"pgqueue demo: schema {DEMO_SCHEMA} of {redact_dsn(dsn)}"
            " (its own schema: no other schema's queues or jobs are touched)",
            highlight=False,
            soft_wrap=True,
        )
    app = demo_app(dsn)
    try:
        # Failed attempts are part of the show; they appear in the table, not as log noise.
        logging.getLogger("pgqueue").setLevel(logging.ERROR)
        applied = app.migrate()
        console.print(f"schema ready ({'migrated ' + str(applied) if applied else 'up to date'})")
        ids = enqueue_examples(app, quick_jobs)
        console.print(
            f"enqueued {len(ids)} jobs: quick emails, slow reports, flaky webhooks, "
            "a failing charge, a few scheduled emails, 3 orders published to a topic with two"
            " subscribers, a workflow (an export that fans out over pages and joins, then a"
            " notification that waits for it) and exports on a rate-limited fair queue (20/s,"
            " 4/s and 3 at once per customer); a schedule fires every 3 seconds"
        )
        try:
            with worker_thread(app, concurrency=8, poll_interval=0.5) as worker:
                _show_progress(app, ids, worker, console, stop)
                if stop.is_set():
                    return  # run_demo says so
                console.print(queue_table(app.queue_stats(), "final"))
                console.print(subscriptions_table(app.subscriptions()))
                console.print(schedules_table(app.schedules()))
                console.print(_fairness_line(app))
                _next_steps(app, dsn, data_dir, embedded, keep_running, console)
                if keep_running:
                    _wait_for_stop(stop, worker)
                    stop.clear()  # the end the user asked for, not an interruption
                    console.print(f"stopping {_running_parts(embedded)} ...", highlight=False)
        except typer.Exit:
            raise
        except Exception as exc:  # the worker's own failure, reported instead of a traceback
            fail(f"the demo worker stopped: {exc}")
    finally:
        app.close()  # on every path, a failing worker's included


def _show_progress(
    app: pgqueue.App, ids: list[int], worker: Any, console: Console, stop: threading.Event
) -> None:
    progress = _progress_bar(len(ids))
    bar = progress.add_task("jobs", total=len(ids))
    with Live(console=console, refresh_per_second=8, transient=True) as live:
        while not stop.is_set():
            left = app.unfinished(ids)
            progress.update(bar, completed=len(ids) - left)
            live.update(
                Group(
                    progress,
                    queue_table(app.queue_stats(), "live"),
                    limits_table(app.queue_limits("exports"), "exports: limits in use"),
                )
            )
            if left == 0 or worker.finished:
                break
            time.sleep(0.25)


def _fairness_line(app: pgqueue.App) -> str:
    """When each customer's last export finished: the small ones long before the big one."""
    done: dict[str, Any] = {}
    for row in app.list_jobs(task="demo.export_orders", limit=1000):
        key = row["group_key"]
        if row["finished_at"] is not None and (key not in done or row["finished_at"] > done[key]):
            done[key] = row["finished_at"]
    if not done:
        return ""
    start = min(done.values())
    order = sorted(done, key=lambda k: done[k])
    return "exports (fair, 20/s, 4/s per customer): last job per customer at " + ", ".join(
        f"{k} +{(done[k] - start).total_seconds():.1f}s" for k in order
    )


def _next_steps(
    app: pgqueue.App,
    dsn: str,
    data_dir: str,
    embedded: bool,
    keep_running: bool,
    console: Console,
) -> None:
    if embedded and not keep_running:
        console.print(
            "The embedded PostgreSQL stops with the demo (its data stays in"
            f" {data_dir}); run pgqueue demo --keep-running to look around with"
            " pgqueue status, jobs and top while it runs.",
            highlight=False,
        )
        return
    shown = redact_dsn(dsn)
    target = f"--dsn '{shown}' --schema {DEMO_SCHEMA}"
    failed = app.list_jobs(state="failed", task="demo.charge_card", limit=1)
    if keep_running:
        parts = _running_parts(embedded)
        console.print(
            f"{parts[0].upper()}{parts[1:]} keep running until Ctrl-C (or SIGTERM); look around:",
            highlight=False,
        )
    else:
        console.print("Next:", highlight=False)
    lines = [
        f"pgqueue status {target}",
        f"pgqueue top {target}",
        f"pgqueue topics {target}",
        f"pgqueue schedules {target}",
        f"pgqueue queue exports {target}   (the rate-limited, fair queue)",
    ]
    if failed:
        lines.append(f"pgqueue job {failed[0]['id']} {target}   (the failed charge)")
    for line in lines:
        console.print(f"  {line}", highlight=False, soft_wrap=True)
    if shown != dsn:
        console.print("  (*** stands for the database's password)", highlight=False)


def _running_parts(embedded: bool) -> str:
    return "the demo worker and its embedded PostgreSQL" if embedded else "the demo worker"


def _wait_for_stop(stop: threading.Event, worker: Any) -> None:
    """Until SIGTERM or Ctrl-C, or the worker ending on its own (its error is raised when
    its thread is joined)."""
    try:
        while not stop.wait(0.5):
            if worker.finished:
                return
    except KeyboardInterrupt:
        return


@contextmanager
def _sigterm_sets(stop: threading.Event) -> Iterator[None]:
    """SIGTERM sets `stop` for the demo's length, so the worker stops gracefully and the
    embedded PostgreSQL with the process (its exit handler never runs on a bare SIGTERM)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _progress_bar(total: int) -> Progress:
    return Progress(
        TextColumn("[bold]jobs finished"), BarColumn(), TextColumn("{task.completed}/{task.total}")
    )
