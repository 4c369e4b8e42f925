"""Workflow plans: dependencies between jobs, durable steps, spawning and gathering children,
suspending a run, completing a job inside the caller's transaction.

The rules that make them safe live in SQL (`008_workflows.sql`,
`014_settle_per_statement.sql` and `018_workflow_counters.sql`: the trigger that keeps each
job's count of unsettled dependencies as the jobs they name end or come back, and the row
locks that order an edge against the end of the job it names); these plans only sequence
the statements, so sync and async callers share them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import LeaseLost, ValidationError
from .enqueue import enqueue_many, enqueue_one
from .plan import Plan, Query
from .spec import JobSpec

#: Dependencies one job may name: a fan-in wider than this is better built with
#: `ctx.map` + `ctx.gather`, which needs no edge per parent on the enqueue side.
MAX_AFTER = 10_000

#: States in which a job is over.
ENDED = frozenset({"completed", "failed", "cancelled"})


def parent_ids(after: Iterable[Any]) -> tuple[int, ...]:
    """`after=[job, job_id, ...]` as ids: Job handles and ints (no bools, no duplicates)."""
    if isinstance(after, (str, bytes)) or not isinstance(after, Iterable):
        raise ValidationError(f"after= takes a list of jobs or job ids, not {after!r}")
    ids: list[int] = []
    for item in after:
        job_id = getattr(item, "id", item)
        if isinstance(job_id, bool) or not isinstance(job_id, int) or job_id <= 0:
            raise ValidationError(f"after= takes jobs or positive job ids, not {item!r}")
        if job_id not in ids:
            ids.append(job_id)
    if len(ids) > MAX_AFTER:
        raise ValidationError(f"after= names {len(ids)} jobs; at most {MAX_AFTER} are allowed")
    return tuple(ids)


def _check_parents(parents: Sequence[int]) -> Plan[None]:
    rows = yield Query("job_exist", {"ids": list(parents)})
    missing = sorted(set(parents) - {r[0] for r in rows})
    if missing:
        raise ValidationError(f"after= names jobs that do not exist: {missing}")


def _depend(children: list[int], parents: Sequence[int]) -> Plan[None]:
    if set(children) & set(parents):
        # Only a duplicate enqueue (unique_key) can hand back a job that is its own parent.
        raise ValidationError("a job cannot depend on itself")
    yield Query("job_depend", {"children": children, "parents": list(parents)})


def enqueue_after(spec: JobSpec, parents: Sequence[int]) -> Plan[tuple[int, bool]]:
    """One job that waits for `parents`. Checked before anything is written, so a missing
    parent leaves the caller's transaction as it was. A duplicate (unique_key) gains no new
    dependencies: the existing job keeps its own."""
    yield from _check_parents(parents)
    job_id, duplicate = yield from enqueue_one(spec)
    if not duplicate:
        yield from _depend([job_id], parents)
    elif job_id in parents:
        raise ValidationError("a job cannot depend on itself")
    return job_id, duplicate


def enqueue_many_after(specs: Sequence[JobSpec], parents: Sequence[int]) -> Plan[list[int]]:
    yield from _check_parents(parents)
    ids = yield from enqueue_many(specs)
    if ids:
        yield from _depend(ids, parents)
    return ids


def load_steps(job_id: int) -> Plan[dict[str, Any]]:
    rows = yield Query("step_list", {"id": job_id})
    return {r[0]: r[1] for r in rows}


def save_step(job_id: int, lease: str, name: str, result: str) -> Plan[None]:
    rows = yield Query("step_save", {"id": job_id, "lease": lease, "name": name, "result": result})
    if not rows:
        raise LeaseLost(f"job {job_id} is no longer leased to this run: step {name!r} not stored")


def spawn(job_id: int, lease: str, name: str, specs: Sequence[JobSpec]) -> Plan[list[int]]:
    """Children and the step recording them, in one transaction (run it atomic)."""
    ids = yield from enqueue_many(specs)
    rows = yield Query(
        "job_gather_edges", {"id": job_id, "lease": lease, "name": name, "children": ids}
    )
    if not rows:
        raise LeaseLost(f"job {job_id} is no longer leased to this run: no children spawned")
    return ids


@dataclass(frozen=True)
class Gathered:
    """Where the children a parent gathers stand, summed up by the database in one row
    however many children there are: a wide join costs Python one JSON document to decode,
    not two per child."""

    #: How many have not ended yet (the parent then suspends).
    pending: int
    #: The first id asked for that has no job (it was pruned).
    missing: int | None
    #: The first, in the order asked for, that ended without completing: (id, state, last
    #: error).
    failed: tuple[int, str, dict[str, Any] | None] | None
    #: Every result in the order asked for (None for a child that has not completed).
    results: list[Any]


def gather_state(ids: Sequence[int]) -> Plan[Gathered]:
    rows = yield Query("job_gather_state", {"ids": list(ids)})
    pending, missing, failed, results = rows[0]
    return Gathered(
        pending=int(pending),
        missing=missing,
        failed=None if failed is None else (int(failed[0]), str(failed[1]), failed[2]),
        results=list(results or ()),
    )


def parent_results(job_id: int) -> Plan[dict[int, Any]]:
    rows = yield Query("job_parent_results", {"id": job_id})
    return {r[0]: r[1] for r in rows}


def complete_in(job_id: int, lease: str, result: str, done_channel: str) -> Plan[None]:
    rows = yield Query(
        "job_complete_in",
        {"id": job_id, "lease": lease, "result": result, "done_channel": done_channel},
    )
    if not rows:
        raise LeaseLost(
            f"job {job_id} is no longer leased to this run (it was rescued and claimed"
            " again): not completed, roll the transaction back"
        )


def graph(job_id: int) -> Plan[dict[str, Any]]:
    """A job's workflow neighbourhood: what it runs after, spawned, is needed by or was
    spawned by (each with its state), its finished steps, and how many it still waits for."""
    edges = yield Query("job_graph", {"id": job_id})
    steps = yield Query("step_times", {"id": job_id})
    labels = {
        ("depends_on", "after"): "after",
        ("depends_on", "gather"): "spawned",
        ("dependent", "after"): "needed_by",
        ("dependent", "gather"): "spawned_by",
    }
    out: dict[str, Any] = {label: [] for label in labels.values()}
    for relation, kind, other, task, state in edges:
        out[labels[(relation, kind)]].append({"id": other, "task": task, "state": state})
    out["steps"] = [{"name": name, "finished_at": at} for name, at in steps]
    waiting_on = [j for j in out["after"] + out["spawned"] if j["state"] not in ENDED]
    out["waiting_on"] = [j["id"] for j in waiting_on]
    return out
