"""`pgqueue demo`: the whole product on one screen, on an embedded PostgreSQL if need be."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn

import pgqueue
from pgqueue.testing import worker_thread

from ._output import fail, redact_dsn
from ._tables import queue_table

#: Retries in the demo wait about a second, so that a flaky job visibly recovers.
FAST_RETRY = pgqueue.RetryPolicy(base=0.5, factor=2.0, max_delay=2.0, jitter=0.2)


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
    app = pgqueue.App(dsn)

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

    return app


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
    jobs += [
        tasks["demo.send_email"].options(delay=3 + i).enqueue(to=f"later{i}@example.com")
        for i in range(3)
    ]
    return [j.id for j in jobs]


def run_demo(
    *,
    dsn: str | None,
    data_dir: str,
    quick_jobs: int,
    console: Console,
) -> None:
    """The command's console is passed in so the demo prints where the command does."""
    embedded = dsn is None
    if dsn is None:
        console.print(f"starting an embedded PostgreSQL in {data_dir} ...")
        dsn = embedded_dsn(data_dir)
    app = demo_app(dsn)
    try:
        # Failed attempts are part of the show; they appear in the table, not as log noise.
        logging.getLogger("pgqueue").setLevel(logging.ERROR)
        applied = app.migrate()
        console.print(f"schema ready ({'migrated ' + str(applied) if applied else 'up to date'})")
        ids = enqueue_examples(app, quick_jobs)
        console.print(
            f"enqueued {len(ids)} jobs: quick emails, slow reports, flaky webhooks, "
            "a failing charge and a few scheduled emails"
        )
        progress = _progress_bar(len(ids))
        bar = progress.add_task("jobs", total=len(ids))
        try:
            with (
                worker_thread(app, concurrency=8, poll_interval=0.5) as worker,
                Live(console=console, refresh_per_second=8, transient=True) as live,
            ):
                while True:
                    left = app.unfinished(ids)
                    progress.update(bar, completed=len(ids) - left)
                    live.update(Group(progress, queue_table(app.queue_stats(), "live")))
                    if left == 0 or worker.finished:
                        break
                    time.sleep(0.25)
        except Exception as exc:  # the worker's own failure, reported instead of a traceback
            fail(f"the demo worker stopped: {exc}")
        console.print(queue_table(app.queue_stats(), "final"))
        failed = app.list_jobs(state="failed", task="demo.charge_card", limit=1)
        if embedded:
            console.print(
                "The embedded PostgreSQL stops with the demo (its data stays in"
                f" {data_dir}); run the demo with --dsn to look around afterwards with"
                " pgqueue status, jobs and top.",
                highlight=False,
            )
            return
        shown = redact_dsn(dsn)
        console.print(f"Next: pgqueue status --dsn '{shown}'", highlight=False, soft_wrap=True)
        if failed:
            console.print(
                f"      pgqueue job {failed[0]['id']} --dsn '{shown}'   (the failed charge)",
                highlight=False,
                soft_wrap=True,
            )
    finally:
        app.close()  # on every path, a failing worker's included


def _progress_bar(total: int) -> Progress:
    return Progress(
        TextColumn("[bold]jobs finished"), BarColumn(), TextColumn("{task.completed}/{task.total}")
    )
