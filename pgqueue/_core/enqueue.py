"""Enqueue plans: one job, or many in chunks, through the database's enqueue functions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .plan import Pipeline, Plan, Query
from .spec import JobSpec, batched, chunk_params


def enqueue_one(spec: JobSpec) -> Plan[tuple[int, bool]]:
    """One statement (`enqueue_job`), so on a pooled autocommit connection it is one round
    trip with no BEGIN or COMMIT. Returns (id, duplicate). A traced enqueue (a span was
    active) runs the variant that records the trace context, in the same statement."""
    name = "job_enqueue" if spec.trace is None else "job_enqueue_traced"
    rows = yield Query(name, spec.params())
    return rows[0][0], rows[0][1]


def enqueue_many(specs: Sequence[JobSpec]) -> Plan[list[int]]:
    """One statement per chunk, in one pipeline (see `enqueue_batches`). Ids in input order."""
    return (yield from enqueue_batches(batched(specs)))


def enqueue_batches(batches: Iterable[Sequence[JobSpec]]) -> Plan[list[int]]:
    """One statement per batch, all sent in one pipeline: where `batches` builds each batch
    as it is consumed (validating and encoding the jobs), the client builds the next batch
    while the server inserts the one before, instead of the two taking turns (measured: 55k
    jobs/s one statement after another, 90k pipelined in batches of 2,000). The SQL function
    wakes each queue's workers at commit (identical notifications fold into one per
    transaction). Ids in input order."""
    results = yield Pipeline(_batch_query(batch) for batch in batches)
    ids: list[int] = []
    for rows in results:
        ids.extend(sorted(r[0] for r in rows))
    return ids


def _batch_query(batch: Sequence[JobSpec]) -> Query:
    name = "job_enqueue_many" if batch[0].trace is None else "job_enqueue_many_traced"
    return Query(name, chunk_params(batch))
