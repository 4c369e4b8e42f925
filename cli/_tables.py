"""The tables and warnings that `status`, `jobs`, `job`, `top` and `demo` show.

Shared by several screens, so they live here rather than in any one command: `top` and
`demo` must render the same queue table as `status` without importing `main`.
"""

from __future__ import annotations

import json
from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

import pgqueue

from ._output import cell, jsonable

_BARS = " ▁▂▃▄▅▆▇█"

#: `pgqueue jobs --stuck` shows why a job is stuck; the plain listing shows what it is.
_STUCK_COLUMNS = [
    "id",
    "task",
    "queue",
    "state",
    "bucket",
    "running_seconds",
    "rescue_count",
    "worker",
    "worker_alive",
]
_JOB_COLUMNS = ["id", "task", "queue", "state", "attempt", "created_at", "last_error"]

#: The order in which `pgqueue job` lists one job's fields: what, where, when, who.
_JOB_FIELDS = (
    "task",
    "queue",
    "state",
    "priority",
    "attempt",
    "max_attempts",
    "args",
    "result",
    "unique_key",
    "group_key",
    "expires_at",
    "created_at",
    "run_at",
    "started_at",
    "finished_at",
    "worker",
)


def queue_table(stats: list[pgqueue.QueueStats], title: str = "queues") -> Table:
    """One row per queue. Piped, it is as wide as it needs (see _output.PIPED_WIDTH); on a
    narrow terminal its cells fold, the queue's name first, rather than lose a column."""
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("queue", style="bold", overflow="fold")
    # Short headers so the table fits an 80-column terminal.
    for col in (
        "sched",
        "avail",
        "run",
        "retry",
        "done",
        "failed",
        "cancel",
        "lag",
        "done/m",
        "fail/h",
    ):
        table.add_column(col, justify="right", overflow="fold")
    for s in stats:
        name = escape(s.queue) + (" [yellow](paused)[/]" if s.paused else "")
        table.add_row(
            name,
            # Workflow jobs waiting for their dependencies: not claimable yet, like scheduled.
            f"{s.scheduled} [dim]+{s.waiting}w[/]" if s.waiting else str(s.scheduled),
            str(s.available),
            # Claimed ahead into a worker's buffer, not started: after the running count.
            f"{s.running} [dim]+{s.claimed}[/]" if s.claimed else str(s.running),
            str(s.retrying),
            f"[green]{s.completed}[/]",
            f"[red]{s.failed}[/]" if s.failed else "0",
            str(s.cancelled),
            f"{s.lag_seconds:.1f}s",
            str(s.completed_last_minute),
            str(s.failed_last_hour),
        )
    if any(st.waiting for st in stats) or any(st.claimed for st in stats):
        table.caption = (
            "sched +Nw: N workflow jobs waiting for what they depend on;"
            " run +N: N claimed into a worker's buffer, not started"
        )
    return table


def limits_table(limits: list[pgqueue.QueueLimit], title: str = "limits") -> Table:
    """Each limit with its use now (the queue_limits view): a queue's row, then its busy
    groups indented under it."""
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("queue / group", overflow="fold")
    for col in ("running", "rate", "starts", "tokens", "waiting", "depth"):
        table.add_column(col, justify="right", overflow="fold")
    for row in limits:
        name = (
            f"  {escape(row.group_key)}"
            if row.group_key is not None
            else f"[bold]{escape(row.queue)}[/]"
            + (" [cyan](fair)[/]" if row.fair else "")
            + (" [yellow](paused)[/]" if row.paused else "")
        )
        running = (
            f"{row.running}/{row.concurrency}" if row.concurrency is not None else str(row.running)
        )
        depth = "" if row.group_key is not None else _depth(row.waiting, row.max_depth)
        table.add_row(
            name,
            running,
            row.rate or "",
            "" if row.starts is None else str(row.starts),
            "" if row.tokens is None else str(row.tokens),
            str(row.waiting),
            depth,
        )
    return table


def _depth(waiting: int, max_depth: int | None) -> str:
    if max_depth is None:
        return ""
    share = waiting / max_depth
    colour = "red" if share >= 1 else "yellow" if share >= NEARLY_FULL else "green"
    return f"[{colour}]{waiting}/{max_depth}[/]"


#: A queue this full (of its max_depth) is reported as nearly full.
NEARLY_FULL = 0.9


def status_warnings(
    stats: list[pgqueue.QueueStats], stuck: list[dict[str, Any]], stuck_count: int
) -> list[str]:
    """What an operator should look at first, in plain words.

    `stuck` is a listing of the stuck_jobs view, which stops at its limit; `stuck_count` is
    the view's full count (`App.count_stuck`), so a number printed here is never a cap.
    """
    lines = [
        f"queue {s.queue} is paused ({s.available + s.retrying} jobs waiting)"
        for s in stats
        if s.paused
    ]
    for s in stats:
        waiting = s.available + s.retrying
        if waiting and not s.live_workers and not s.paused:
            lines.append(
                f"queue {s.queue} has {waiting} job(s) waiting and no live worker serving it"
            )
        if s.max_depth is not None and s.depth >= s.max_depth:
            lines.append(
                f"queue {s.queue} is full ({s.depth}/{s.max_depth}): enqueue raises QueueFull"
            )
        elif s.max_depth is not None and s.depth >= NEARLY_FULL * s.max_depth:
            lines.append(f"queue {s.queue} is nearly full ({s.depth}/{s.max_depth})")
    running = [j for j in stuck if j["state"] == "running"]
    orphaned = [j for j in running if not j["worker_alive"]]
    troubled = len(stuck) - len(running)
    if stuck_count > len(stuck):
        # Only a sample is listed: the total is exact, the breakdown is the sample's.
        lines.append(
            f"{stuck_count} job(s) running past their expected time, rescued or retried"
            f" several times (of the first {len(stuck)}: {len(running)} running long"
            + (f", {len(orphaned)} on a dead worker" if orphaned else "")
            + f", {troubled} rescued or retried): pgqueue jobs --stuck"
        )
        return lines
    if running:
        lines.append(
            f"{len(running)} running job(s) past their expected time"
            + (f", {len(orphaned)} on a dead worker" if orphaned else "")
            + ": pgqueue jobs --stuck"
        )
    if troubled:
        lines.append(f"{troubled} job(s) rescued or retried several times: pgqueue jobs --stuck")
    return lines


def sparkline(values: list[int]) -> str:
    """A trend in one line of text, scaled to its own peak so that a quiet queue still shows."""
    peak = max(values) if values and max(values) > 0 else 1
    return "".join(_BARS[round(v / peak * (len(_BARS) - 1))] for v in values)


def workers_table(workers: list[dict[str, Any]]) -> Table:
    """Who is serving what, with a silent worker marked so an operator spots a dead one."""
    table = Table(title="workers", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("worker", "queues", "running", "heartbeat", "role"):
        table.add_column(col, overflow="fold")
    for w in workers:
        heartbeat = f"{w['silent_seconds']:.1f}s ago"
        table.add_row(
            f"{w['hostname']}:{w['pid']}",
            ",".join(w["queues"] or ["all"]),
            f"{w['running']}/{w['concurrency']}"
            + (f" [dim]+{w['claimed']} claimed[/]" if w.get("claimed") else ""),
            heartbeat if w["alive"] else f"[red]{heartbeat} (dead?)[/]",
            "leader" if w["leader"] else "",
        )
    return table


def failures_table(failures: list[dict[str, Any]]) -> Table:
    """The latest errors; a long value folds (a narrow terminal) rather than vanish."""
    table = Table(
        title="recent failures", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False
    )
    for col in ("id", "task", "queue", "state", "attempt", "error"):
        table.add_column(col, overflow="fold")
    for f in failures:
        table.add_row(
            str(f["id"]),
            f["task"],
            f["queue"],
            f["state"],
            str(f["attempt"]),
            f["last_error"] or "",
        )
    return table


def jobs_table(rows: list[dict[str, Any]], *, stuck: bool) -> Table:
    """A job listing whose long values fold rather than vanish: ids and errors get copied."""
    columns = _STUCK_COLUMNS if stuck else _JOB_COLUMNS
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(cell(row.get(col)) for col in columns))
    return table


def job_table(info: pgqueue.JobInfo) -> Table:
    """One job's fields, with args and result as JSON so they can be pasted back."""
    table = Table(show_header=False, title=f"job {info.id}", title_justify="left")
    # Where the job came from, shown only for jobs a publish or a schedule made.
    origin = tuple(f for f in ("topic", "schedule", "scheduled_for") if getattr(info, f))
    for field in _JOB_FIELDS + origin:
        value = getattr(info, field)
        table.add_row(
            field,
            json.dumps(jsonable(value)) if isinstance(value, dict | list) else str(jsonable(value)),
        )
    return table


def tasks_table(tasks: list[dict[str, Any]]) -> Table:
    """The task catalog: each registered task with the defaults SQL enqueue applies."""
    table = Table(
        title="tasks", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
        collapse_padding=True,
    )  # fmt: skip
    for col in ("task", "queue", "priority", "attempts", "timeout", "registered by", "updated"):
        table.add_column(col, overflow="fold")
    for t in tasks:
        table.add_row(
            escape(t["name"]),
            escape(t["queue"]),
            str(t["priority"]),
            str(t["max_attempts"]),
            "-" if t["timeout"] is None else f"{t['timeout']:g}s",
            escape(t["registered_by"] or "-"),
            t["updated_at"].strftime("%Y-%m-%d %H:%M:%S"),
        )
    return table


_RELATIONS = (
    ("after", "runs after"),
    ("spawned", "spawned"),
    ("needed_by", "needed by"),
    ("spawned_by", "spawned by"),
)


def workflow_tree(info: pgqueue.JobInfo, graph: dict[str, Any]) -> Tree | None:
    """A job's workflow as a tree: who it waits for, who it spawned, who needs it, and its
    finished steps; None for a job outside any workflow."""
    if not any(graph[key] for key, _ in _RELATIONS) and not graph["steps"]:
        return None
    head = f"workflow of job {info.id} ({escape(info.task)}, {info.state.value})"
    if graph["waiting_on"]:
        head += f": waiting for {len(graph['waiting_on'])} job(s)"
    tree = Tree(head)
    for key, label in _RELATIONS:
        if graph[key]:
            branch = tree.add(label)
            for j in graph[key]:
                mark = " [yellow]<- waiting for it[/]" if j["id"] in graph["waiting_on"] else ""
                branch.add(f"job {j['id']} {escape(j['task'])} ({j['state']}){mark}")
    if graph["steps"]:
        steps = tree.add("steps")
        for step in graph["steps"]:
            steps.add(f"{escape(step['name'])} (finished {step['finished_at']:%Y-%m-%d %H:%M:%S})")
    return tree


def subscriptions_table(rows: list[dict[str, Any]]) -> Table:
    """Topic subscriptions (`pgqueue topics`): who receives what, and how much lately."""
    table = Table(
        title="subscriptions", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
        collapse_padding=True,
    )  # fmt: skip
    for col in ("pattern", "task", "queue", "jobs last hour", "since"):
        table.add_column(col, overflow="fold")
    for s in rows:
        table.add_row(
            escape(s["pattern"]),
            escape(s["task"]),
            escape(s["queue"]),
            str(s["published_last_hour"]),
            cell(s["created_at"]),
        )
    return table


def schedules_table(rows: list[dict[str, Any]]) -> Table:
    """Schedules (`pgqueue schedules`, `top`): when each runs next and what it last made."""
    table = Table(
        title="schedules", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
        collapse_padding=True,
    )  # fmt: skip
    for col in ("name", "task", "cron", "tz", "next run", "last slot", "last job", "status"):
        table.add_column(col, overflow="fold")
    for s in rows:
        if s["paused"]:
            status = "[yellow]paused[/]"
        elif not s["declared_by_live_workers"]:
            status = "[dim]no live worker declares it[/]"
        else:
            status = f"[green]active[/] ({s['declared_by_live_workers']} workers)"
        last_job = (
            ""
            if s["last_job_id"] is None
            else f"{s['last_job_id']} {s['last_job_state'] or 'pruned'}"
        )
        table.add_row(
            escape(s["name"]),
            escape(s["task"]),
            escape(s["cron"]),
            escape(s["tz"]),
            cell(s["next_run_at"]),
            cell(s["last_slot"]),
            escape(last_job),
            status,
        )
    return table
