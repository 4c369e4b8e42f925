"""Schedules: what `app.periodic` declares, and the plans that declare, fire, pause and list
them. The arithmetic is in `cron.py`; here only what is written and read.

Exactly once per slot: `fire_schedule` (sql/011) advances the schedule's `last_slot` and
inserts the slot's job in one transaction under the schedule row's lock, and skips any slot
not later than `last_slot`. So whoever fires (one leader, or two overlapping while a lease
expires, or a leader after a restart) a slot makes one job, and pruning the job changes
nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from ..errors import ValidationError
from .cron import Cron, Due, check_catch_up, due
from .plan import Plan, Query
from .validate import check_int, check_name, encode_args

#: The payload of the wake-up a worker sends on the jobs channel when schedules change (a
#: worker declared some, or one was paused or resumed): the leader's scheduler re-reads
#: them at once instead of sleeping to its next slot. `#` cannot start a queue name.
SCHEDULES_CHANGED = "#schedules"


@dataclass(frozen=True)
class Schedule:
    """One declared schedule, validated."""

    name: str
    task: str
    cron: Cron
    args: str  # JSON text
    queue: str | None
    priority: int | None
    catch_up: str

    @classmethod
    def build(
        cls,
        *,
        name: str,
        task: str,
        cron: str,
        tz: str,
        args: Any,
        queue: str | None,
        priority: int | None,
        catch_up: str,
    ) -> Schedule:
        check_name("schedule", name)
        check_name("task", task)
        if queue is not None:
            check_name("queue", queue)
        if priority is not None:
            check_int("priority", priority)
        return cls(
            name=name,
            task=task,
            cron=Cron(cron, tz),
            args=encode_args({} if args is None else args),
            queue=queue,
            priority=priority,
            catch_up=check_catch_up(catch_up),
        )

    def same_as(self, other: Schedule) -> bool:
        return (self.task, self.cron.fields, self.cron.tz, self.args, self.queue) == (
            other.task,
            other.cron.fields,
            other.cron.tz,
            other.args,
            other.queue,
        ) and (self.priority, self.catch_up) == (other.priority, other.catch_up)


def declare(schedules: Sequence[Schedule], worker_id: UUID) -> Plan[None]:
    """Write a worker's schedules and that it declares them. A name another live worker
    declares for a different task is refused (ValidationError), and nothing of that
    schedule is written."""
    params = {
        "names": [s.name for s in schedules],
        "tasks": [s.task for s in schedules],
        "crons": [s.cron.expr for s in schedules],
        "tzs": [s.cron.tz for s in schedules],
        "args": [s.args for s in schedules],
        "queues": [s.queue for s in schedules],
        "priorities": [s.priority for s in schedules],
        "catch_ups": [s.catch_up for s in schedules],
        "worker_id": worker_id,
    }
    yield Query("schedule_upsert", params)
    clashes = yield Query("schedule_declare", params)
    if clashes:
        name, task, theirs = clashes[0]
        raise ValidationError(
            f"schedule {name!r} is declared for task {theirs!r} by a live worker; this process"
            f" declares it for {task!r}: give one of them another name"
        )


def undeclare(worker_id: UUID) -> Plan[None]:
    yield Query("schedule_undeclare", {"worker_id": worker_id})


@dataclass(frozen=True)
class Active:
    """A schedule as the firing pass reads it: fires only while not paused and declared."""

    name: str
    cron: Cron | None  # None: stored expression this version cannot evaluate
    catch_up: str
    last_slot: datetime | None
    next_run_at: datetime | None


def active() -> Plan[tuple[datetime, list[Active]]]:
    """The database's clock and every schedule that may fire now."""
    rows = yield Query("schedule_active")
    now: datetime | None = None
    found: list[Active] = []
    for name, expr, tz, catch_up, last_slot, next_run_at, db_now in rows:
        now = db_now
        try:
            cron: Cron | None = Cron(expr, tz)
        except ValidationError:
            cron = None
        found.append(Active(name, cron, catch_up, last_slot, next_run_at))
    if now is None:
        now = (yield Query("db_now"))[0][0]
    assert now is not None
    return now, found


def fire(name: str, plan: Due) -> Plan[list[tuple[datetime, int]]]:
    """Fire a schedule's due slots (and record its next run); the (slot, job id) made."""
    rows = yield Query(
        "schedule_fire", {"name": name, "slots": plan.fire, "next_run_at": plan.next_run_at}
    )
    return [(r[0], r[1]) for r in rows]


def pass_due(schedule: Active, now: datetime) -> Due | None:
    """What a pass does for one schedule; None when there is nothing to write."""
    if schedule.cron is None:
        return None
    plan = due(schedule.cron, schedule.catch_up, schedule.last_slot, now)
    if not plan.fire and plan.next_run_at == schedule.next_run_at:
        return None
    return plan


def pause(name: str, paused: bool) -> Plan[None]:
    check_name("schedule", name)
    rows = yield Query("schedule_pause", {"name": name, "paused": paused})
    if not rows:
        raise ValidationError(f"no schedule named {name!r} (see `pgqueue schedules`)")


def list_schedules() -> Plan[list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = yield Query("schedule_list", None, columns=True)
    return rows


def check_unique(schedules: Iterable[Schedule], new: Schedule) -> None:
    """Within one App: a name declared again must declare the same schedule."""
    for s in schedules:
        if s.name == new.name and not s.same_as(new):
            raise ValidationError(
                f"schedule {new.name!r} is already declared"
                + (f" for task {s.task!r}" if s.task != new.task else " with other settings")
            )
