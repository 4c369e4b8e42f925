"""OpenTelemetry traces, when the `opentelemetry-api` package is installed (extra `otel`).

An enqueue inside an active span records that span's context with the job (W3C
`traceparent`, through the application's configured propagators); the worker runs each job
inside a CONSUMER span that links to it, with the job's id, task, queue and attempt as
attributes. The import is tried once, here: without OpenTelemetry `ENABLED` is False and
nothing else in this module runs, so enqueue and the worker pay one boolean test.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

try:
    from opentelemetry import propagate, trace
except ImportError:  # the extra is not installed: tracing is off
    ENABLED = False
else:
    ENABLED = True
    #: A proxy until the application sets a tracer provider; then spans go to it.
    _tracer = trace.get_tracer("pgqueue")
    _NO_PROVIDER = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)


#: (monotonic time of the last look, its answer): see spans_wanted.
_wanted = (-1.0, False)


def spans_wanted() -> bool:
    """Whether a job's run should open a span: only once the application has set a tracer
    provider. Before that every span is a non-recording no-op, yet opening one (attributes,
    links, context) cost a sixteenth of a drain worker's CPU per job. The answer is kept
    for a second (looking reads the environment while no provider is set): a provider set
    later is used from a second after."""
    global _wanted
    if not ENABLED:
        return False
    now = time.monotonic()
    if now - _wanted[0] >= 1.0:
        _wanted = (now, not isinstance(trace.get_tracer_provider(), _NO_PROVIDER))
    return _wanted[1]


def current_context() -> str | None:
    """The active span's context as the JSON a job stores, or None (no OpenTelemetry, no
    valid span: an enqueue outside any trace records nothing)."""
    if not ENABLED or not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return json.dumps(carrier, separators=(",", ":")) if carrier else None


def _link(carrier: Mapping[str, str] | None) -> list[trace.Link]:
    if not carrier:
        return []
    context = trace.get_current_span(propagate.extract(dict(carrier))).get_span_context()
    return [trace.Link(context)] if context.is_valid else []


@contextmanager
def job_span(
    job_id: int, task: str, queue: str, attempt: int, carrier: Mapping[str, str] | None
) -> Iterator[Any]:
    """The span of one execution of a job (only called when ENABLED): a new trace (a job may
    run long after the request and more than once), linked to the enqueuer's span. An
    exception is recorded on it and sets its status to error."""
    with _tracer.start_as_current_span(
        f"process {task}",
        kind=trace.SpanKind.CONSUMER,
        links=_link(carrier),
        attributes={
            "pgqueue.job.id": job_id,
            "pgqueue.job.task": task,
            "pgqueue.job.queue": queue,
            "pgqueue.job.attempt": attempt,
            "messaging.system": "pgqueue",
            "messaging.operation.type": "process",
            "messaging.destination.name": queue,
            "messaging.message.id": str(job_id),
        },
    ) as span:
        yield span
