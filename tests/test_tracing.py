"""OpenTelemetry: an enqueue inside a span carries its context in the job, and the worker's
span for the job's execution links to it. Checked with the SDK's in-memory exporter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

trace = pytest.importorskip("opentelemetry.trace")
sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

import pgqueue  # noqa: E402
from pgqueue.testing import worker_thread  # noqa: E402
from tests.conftest import ROOT  # noqa: E402

EXPORTER = InMemorySpanExporter()
_PROVIDER = sdk_trace.TracerProvider()
_PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))
# The global provider can be set once per process; pgqueue's tracer is a proxy that follows it.
trace.set_tracer_provider(_PROVIDER)
tracer = trace.get_tracer("tests")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    EXPORTER.clear()
    yield EXPORTER
    EXPORTER.clear()


def _app(dsn: str) -> pgqueue.App:
    app = pgqueue.App(dsn)

    @app.task(name="t.charge")
    def charge(order: int) -> str:
        with tracer.start_as_current_span("call the gateway"):
            return f"charged {order}"

    @app.task(name="t.broken", max_attempts=1)
    async def broken(order: int) -> None:
        raise ValueError(f"no such order {order}")

    return app


def _stored(db: Any, job_id: int) -> dict[str, str] | None:
    row = db.execute("SELECT trace FROM pgqueue.jobs WHERE id = %s", (job_id,)).fetchone()
    return row[0]  # type: ignore[no-any-return]


def _traceparent(span: Any) -> str:
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def test_the_worker_span_links_to_the_request_that_enqueued(
    dsn: str, db: Any, spans: InMemorySpanExporter
) -> None:
    app = _app(dsn)
    try:
        with tracer.start_as_current_span("POST /orders") as request:
            job = app.tasks["t.charge"].enqueue(order=7)
            many = app.tasks["t.charge"].enqueue_many([{"order": 8}, {"order": 9}])
        assert _stored(db, job.id) == {"traceparent": _traceparent(request)}
        assert all(_stored(db, j.id) == {"traceparent": _traceparent(request)} for j in many)
        with worker_thread(app, burst=True):
            pass
        assert job.wait(timeout=10) == "charged 7"
    finally:
        app.close()

    finished = spans.get_finished_spans()
    runs = [s for s in finished if s.name == "process t.charge"]
    assert len(runs) == 3
    run = next(s for s in runs if s.attributes["pgqueue.job.id"] == job.id)
    assert run.kind == trace.SpanKind.CONSUMER
    assert dict(run.attributes) == {
        "pgqueue.job.id": job.id,
        "pgqueue.job.task": "t.charge",
        "pgqueue.job.queue": "default",
        "pgqueue.job.attempt": 1,
        "messaging.system": "pgqueue",
        "messaging.operation.type": "process",
        "messaging.destination.name": "default",
        "messaging.message.id": str(job.id),
    }
    (link,) = run.links
    assert link.context.trace_id == request.get_span_context().trace_id
    assert link.context.span_id == request.get_span_context().span_id
    # A new trace (the job runs later, maybe more than once), and the task's own spans in it.
    assert run.context.trace_id != request.get_span_context().trace_id
    inner = next(s for s in finished if s.name == "call the gateway")
    assert inner.parent is not None and inner.parent.span_id == run.context.span_id


def test_a_failed_attempt_is_an_error_span(dsn: str, spans: InMemorySpanExporter) -> None:
    app = _app(dsn)
    try:
        job = app.tasks["t.broken"].enqueue(order=3)  # no span around: nothing to link to
        with worker_thread(app, burst=True):
            pass
        with pytest.raises(pgqueue.JobFailed):
            job.wait(timeout=10)
    finally:
        app.close()
    (run,) = [s for s in spans.get_finished_spans() if s.name == "process t.broken"]
    assert run.links == ()
    assert run.status.status_code == trace.StatusCode.ERROR
    (event,) = [e for e in run.events if e.name == "exception"]
    assert event.attributes["exception.message"] == "no such order 3"


def test_untraced_enqueues_store_nothing_and_the_context_does_not_leak(
    dsn: str, db: Any, spans: InMemorySpanExporter
) -> None:
    app = _app(dsn)
    try:
        outside = app.tasks["t.charge"].enqueue(order=1)
        assert _stored(db, outside.id) is None
        import psycopg

        with psycopg.connect(dsn) as conn:  # the caller's transaction
            with tracer.start_as_current_span("POST /batch") as request:
                traced = app.tasks["t.charge"].options(conn=conn).enqueue(order=2)
            plain = app.tasks["t.charge"].options(conn=conn).enqueue(order=3)
            by_sql = conn.execute("SELECT pgqueue.enqueue('t.charge', '{\"order\": 4}')")
            by_sql_id = by_sql.fetchone()[0]  # type: ignore[index]
        assert _stored(db, traced.id) == {"traceparent": _traceparent(request)}
        assert _stored(db, plain.id) is None
        assert _stored(db, by_sql_id) is None
    finally:
        app.close()


def test_any_sql_client_can_pass_a_trace_context(dsn: str, db: Any) -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with db.transaction():
        db.execute(
            "SELECT set_config('pgqueue.trace_context', %s, true)",
            (json.dumps({"traceparent": parent}),),
        )
        job_id = db.execute("SELECT pgqueue.enqueue('t.charge', '{\"order\": 5}')").fetchone()[0]
    assert _stored(db, job_id) == {"traceparent": parent}
    app = pgqueue.App(dsn)
    try:
        assert app.get_job(job_id).trace == {"traceparent": parent}
    finally:
        app.close()


def test_without_opentelemetry_tracing_is_off_and_jobs_still_run(dsn: str) -> None:
    script = """
import sys
sys.modules["opentelemetry"] = None  # as if the package were not installed
import pgqueue, pgqueue._tracing as tracing
from pgqueue.testing import drain
assert not tracing.ENABLED and tracing.current_context() is None
app = pgqueue.App(sys.argv[1])
@app.task(name="t.plain")
def plain(n: int) -> int:
    return n + 1
job = plain.enqueue(n=1)
drain(app)
assert job.wait(timeout=10) == 2
assert "opentelemetry" not in {m.split(".")[0] for m in sys.modules if sys.modules[m]}
app.close()
print("ok")
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script, dsn], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_no_span_is_opened_until_the_application_sets_a_tracer_provider(dsn: str) -> None:
    """With OpenTelemetry installed but no provider set, a job's run opens no span (each
    would be a non-recording no-op, and opening one cost a drain worker CPU per job); a
    provider set while the worker runs is used within a second (the test skips the wait)."""
    script = """
import sys
import pgqueue, pgqueue._tracing as tracing
from opentelemetry import trace
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pgqueue.testing import drain
assert tracing.ENABLED and not tracing.spans_wanted()
opened = []
real = tracing.job_span
def counting(*args, **kwargs):
    opened.append(args[0])
    return real(*args, **kwargs)
import pgqueue._runtime.executor as executor
executor.job_span = counting
app = pgqueue.App(sys.argv[1])
@app.task(name="t.plain")
def plain(n: int) -> int:
    return n + 1
first = plain.enqueue(n=1)
drain(app)
assert first.wait(timeout=10) == 2 and opened == [], opened
exporter = InMemorySpanExporter()
provider = sdk_trace.TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
tracing._wanted = (-1.0, False)  # the next look is now, not a second later
assert tracing.spans_wanted()
second = plain.enqueue(n=2)
drain(app)
assert second.wait(timeout=10) == 3 and opened == [second.id], opened
assert [s.name for s in exporter.get_finished_spans()] == ["process t.plain"]
app.close()
print("ok")
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script, dsn], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
