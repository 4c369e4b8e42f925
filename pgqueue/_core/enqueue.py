"""Enqueue plans: one job, or many in chunks, through the database's enqueue functions."""

from __future__ import annotations

from collections.abc import Sequence

from .plan import Plan, Query
from .spec import JobSpec, chunk_params, chunks


def enqueue_one(spec: JobSpec) -> Plan[tuple[int, bool]]:
    """One statement (`enqueue_job`), so on a pooled autocommit connection it is one round
    trip with no BEGIN or COMMIT. Returns (id, duplicate). A traced enqueue (a span was
    active) runs the variant that records the trace context, in the same statement."""
    name = "job_enqueue" if spec.trace is None else "job_enqueue_traced"
    rows = yield Query(name, spec.params())
    return rows[0][0], rows[0][1]


def enqueue_many(specs: Sequence[JobSpec]) -> Plan[list[int]]:
    """One statement per chunk; the SQL function wakes each queue's workers at commit
    (identical notifications fold into one per transaction). Ids in input order."""
    ids: list[int] = []
    for chunk in chunks(specs):
        name = "job_enqueue_many" if chunk[0].trace is None else "job_enqueue_many_traced"
        rows = yield Query(name, chunk_params(chunk))
        ids.extend(sorted(r[0] for r in rows))
    return ids
