"""`pgqueue top`: a live, full-screen view of queues, throughput, workers and failures."""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.text import Text

import pgqueue

from ._tables import (
    failures_table,
    limits_table,
    queue_table,
    schedules_table,
    sparkline,
    status_warnings,
    workers_table,
)

#: The sparkline covers 5 minutes in 10-second buckets.
BUCKET_SECONDS, BUCKETS = 10.0, 30
#: How many stuck jobs a frame reads to break the warning down (the count is exact).
STUCK_SAMPLE = 1000


def render(app: pgqueue.App, *, expand: bool = True) -> RenderableType:
    """One frame of the dashboard, from a handful of cheap queries.

    `expand=False` (output that is not a terminal, hence very wide) keeps the panel to its
    content's width instead of the console's.
    """
    stats = app.queue_stats()
    stuck = app.stuck_jobs(limit=STUCK_SAMPLE)
    stuck_count = app.count_stuck()
    series = app.throughput(BUCKET_SECONDS, BUCKETS)
    completed = [c for c, _ in series]
    failed = [f for _, f in series]
    now = datetime.now(timezone.utc).strftime("%H:%M:%S")
    rate = sum(completed[-6:]) / (6 * BUCKET_SECONDS)
    header = Text.assemble(
        ("pgqueue top", "bold"),
        f"  schema {app.schema}  {now} UTC  ",
        ("q quits", "dim"),
    )
    spark = Text.assemble(
        ("completed ", "green"),
        sparkline(completed),
        f"  {rate:.1f}/s over the last minute\n",
        ("failed    ", "red"),
        sparkline(failed),
        f"  {sum(failed)} in 5 min",
    )
    parts: list[RenderableType] = [
        header,
        queue_table(stats, "queues") if stats else Text("no queues yet"),
        Panel(
            spark,
            title="throughput, last 5 minutes",
            title_align="left",
            box=box.ROUNDED,
            expand=expand,
        ),
        workers_table(app.workers()),
    ]
    limits = app.queue_limits()
    if limits:
        parts.insert(2, limits_table(limits))
    schedules = app.schedules()
    if schedules:
        parts.append(schedules_table(schedules))
    for line in status_warnings(stats, stuck, stuck_count):
        parts.append(Text.from_markup(f"[bold yellow]warning:[/] {line}"))
    failures = app.recent_failures(8)
    if failures:
        parts.append(failures_table(failures))
    return Group(*parts)


@contextlib.contextmanager
def _keys() -> Iterator[Any]:
    """Single keypresses without Enter, when stdin is a terminal; restored on exit."""
    if not sys.stdin.isatty():
        yield None
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _pressed_q(fd: Any, timeout: float) -> bool:
    if fd is None:
        time.sleep(timeout)
        return False
    ready, _, _ = select.select([fd], [], [], timeout)
    return bool(ready) and os.read(fd, 1) in (b"q", b"Q")


def run_top(app: pgqueue.App, *, console: Console, once: bool, interval: float) -> None:
    """`--once` prints a single frame, for scripts and terminals without a full screen."""
    if once:
        console.print(render(app, expand=console.is_terminal))
        return
    with (
        contextlib.suppress(KeyboardInterrupt),
        _keys() as fd,
        Live(render(app), console=console, screen=True, auto_refresh=False) as live,
    ):
        while not _pressed_q(fd, interval):
            live.update(render(app), refresh=True)
