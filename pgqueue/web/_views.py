"""What the dashboard's pages show, shaped from the admin API's values: pure functions, so
the pages' arithmetic (chart bars, timelines, ages) is tested without a browser."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, NamedTuple
from urllib.parse import urlencode

from .._logging import redact
from ..types import JobInfo, JobState, QueueLimit, QueueStats

#: The states the jobs page filters by, in lifecycle order.
STATES = [s.value for s in JobState]
#: Live states (exact counts from the claim indexes) and finished ones (the last hour's).
LIVE = ("scheduled", "available", "claimed", "running", "retrying", "waiting")
FINISHED = ("completed", "failed", "cancelled")
#: The jobs page's filters, in the URL (so a filtered page can be shared); flow control,
#: topics and schedules add theirs here.
JOB_FILTERS = ("state", "queue", "task", "group", "topic", "schedule")
#: Filters that bulk retry (`retry_failed`: a queue and a task) cannot narrow by.
NOT_BULK_FILTERS = ("group", "topic", "schedule")


def pretty_json(value: Any, keys: frozenset[str]) -> str:
    """JSON for a <pre>, sensitive keys masked. Escaping is the template's (autoescape)."""
    return json.dumps(redact(value, keys), indent=2, sort_keys=True, default=str)


def ago(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = max(0.0, float(seconds))
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def when(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


class Bar(NamedTuple):
    x: float
    completed_y: float
    completed_h: float
    failed_y: float
    failed_h: float
    label: str


class Chart(NamedTuple):
    width: int
    height: int
    bars: list[Bar]
    peak: int
    total_completed: int
    total_failed: int


def chart(series: Sequence[tuple[int, int]], width: int = 600, height: int = 120) -> Chart:
    """Stacked bars (completed under failed), oldest first, scaled to the busiest bucket."""
    peak = max((c + f for c, f in series), default=0)
    scale = (height - 4) / peak if peak else 0.0
    step = width / max(len(series), 1)
    bars = []
    n = len(series)
    for i, (completed, failed) in enumerate(series):
        ch, fh = completed * scale, failed * scale
        minutes = n - i
        bars.append(
            Bar(
                x=round(i * step, 2),
                completed_y=round(height - ch, 2),
                completed_h=round(ch, 2),
                failed_y=round(height - ch - fh, 2),
                failed_h=round(fh, 2),
                label=f"{minutes} min ago: {completed} completed, {failed} failed",
            )
        )
    return Chart(
        width,
        height,
        bars,
        peak,
        sum(c for c, _ in series),
        sum(f for _, f in series),
    )


def totals(stats: Iterable[QueueStats]) -> dict[str, int]:
    out = dict.fromkeys((*LIVE, *FINISHED), 0)
    for q in stats:
        for state in out:
            out[state] += int(getattr(q, state))
    return out


#: A queue this full (of its max_depth) is marked nearly full (as `pgqueue status` does).
NEARLY_FULL = 0.9


def fill(q: QueueStats) -> str:
    """The mark for a queue's depth against its max_depth: "full", "nearly-full" or ""."""
    if q.max_depth is None:
        return ""
    if q.depth >= q.max_depth:
        return "full"
    if q.depth >= NEARLY_FULL * q.max_depth:
        return "nearly-full"
    return ""


def warnings(stats: Iterable[QueueStats]) -> list[tuple[str, str]]:
    """(queue, text) for what an operator should look at first: a queue with jobs waiting to
    run and no live worker serving it (nothing will run them), a full or nearly full one."""
    out = []
    for q in stats:
        ready = q.available + q.retrying
        if ready and not q.live_workers and not q.paused:
            out.append(
                (q.queue, f"{ready} job{'s' if ready != 1 else ''} waiting and no live worker")
            )
        mark = fill(q)
        if mark:
            out.append((q.queue, f"{mark.replace('-', ' ')} ({q.depth}/{q.max_depth})"))
    return out


class Limits(NamedTuple):
    """A queue's own limits and their use now (its row of `queue_limits`, no group)."""

    concurrency: str
    rate: str
    groups: int


def limits(rows: Iterable[QueueLimit]) -> dict[str, Limits]:
    """Per queue: "running/limit" for concurrency, "tokens left of rate" for the rate, and
    how many busy groups have limits of their own; queues without limits are absent."""
    out: dict[str, Limits] = {}
    groups: dict[str, int] = {}
    for r in rows:
        if r.group_key is not None:
            groups[r.queue] = groups.get(r.queue, 0) + 1
    for r in rows:
        if r.group_key is not None:
            continue
        conc = f"{r.running}/{r.concurrency}" if r.concurrency is not None else ""
        rate = f"{r.tokens if r.tokens is not None else '?'} left of {r.rate}" if r.rate else ""
        if conc or rate or groups.get(r.queue):
            out[r.queue] = Limits(conc, rate, groups.get(r.queue, 0))
    return out


class Event(NamedTuple):
    at: datetime
    what: str
    kind: str


def timeline(job: JobInfo) -> list[Event]:
    """What happened to a job, in time order, from its row: created, each failed attempt,
    the current attempt's start, its end."""
    events: list[Event] = []
    if job.created_at is not None:
        events.append(Event(job.created_at, "enqueued", "created"))
    if (
        job.run_at is not None
        and job.created_at is not None
        and (job.run_at - job.created_at).total_seconds() > 1
        and not job.errors
    ):
        events.append(Event(job.run_at, "due", "scheduled"))
    for err in job.errors:
        at = _parse_time(err.get("at"))
        if at is not None:
            events.append(
                Event(
                    at, f"attempt {err.get('attempt', '?')} failed: {err.get('type', '')}", "failed"
                )
            )
    if job.started_at is not None:
        events.append(Event(job.started_at, f"attempt {job.attempt} started", "running"))
    if job.finished_at is not None:
        events.append(Event(job.finished_at, job.state.value, job.state.value))
    events.sort(key=lambda e: e.at)
    return events


#: A job's workflow relations as the job page lists them: (key in `job_graph`, heading).
RELATIONS = (
    ("after", "Runs after"),
    ("spawned", "Spawned"),
    ("needed_by", "Needed by"),
    ("spawned_by", "Spawned by"),
)


def workflow(graph: Mapping[str, Any]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """The relations a job has, in page order: (key, heading, related jobs); empty ones
    left out, so a job outside any workflow shows no workflow section."""
    return [(key, title, list(graph.get(key) or [])) for key, title in RELATIONS if graph.get(key)]


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def query_string(filters: Mapping[str, Any], **extra: Any) -> str:
    """The URL query for these filters (empty ones left out), plus `extra`."""
    merged = {**filters, **extra}
    return urlencode({k: v for k, v in merged.items() if v not in (None, "")})
