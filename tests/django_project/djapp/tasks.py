"""Tasks of the test app: sync and async, one raising, one taking context, prioritised ones,
and helpers for routing, concurrency and retries."""

import asyncio

from djapp.recording import lines, record, wait_for

try:
    from django.tasks import task
except ImportError:  # Django 5.2 with the backport
    from django_tasks import task


class Boom(Exception):
    """Raised on purpose: its path must come back as the error's exception_class_path."""


@task
def add(a, b):
    return a + b


@task(queue_name="async")
async def async_add(a, b):
    await asyncio.sleep(0.01)
    return a + b


@task(queue_name="errors")
def fail(message):
    raise Boom(message)


@task(queue_name="errors")
async def async_fail(message):
    raise Boom(message)


@task(queue_name="errors")
def exits():
    """SystemExit is a task failure (as in Django's own backends), not the worker's exit."""
    raise SystemExit(3)


@task
def returns_tuple():
    return (1, "two", b"three")


@task
def returns_unstorable():
    return object()


@task(takes_context=True, queue_name="context")
def with_context(context, tag):
    return {
        "attempt": context.attempt,
        "id": context.task_result.id,
        "status": str(context.task_result.status),
        "tag": tag,
    }


@task(takes_context=True, queue_name="context")
async def async_with_context(context, tag):
    return {"attempt": context.attempt, "id": context.task_result.id, "tag": tag}


@task(queue_name="tx")
def mark(tag):
    record("ran", tag=tag)
    return tag


@task(priority=50, queue_name="prio")
def urgent(tag):
    record("ran", tag=tag)


@task(queue_name="prio")
def ordinary(tag):
    record("ran", tag=tag)


@task(queue_name="conc")
def rendezvous(tag, peers):
    """Returns only once `peers` runs have started: proves they ran at the same time."""
    record("start", tag=tag)
    wait_for(
        lambda: sum(1 for r in lines() if r["kind"] == "start") >= peers,
        timeout=30,
        what=f"{peers} concurrent runs",
    )
    return tag


@task(queue_name="many")
def once(n):
    """Records its run; until two worker processes have run one, it waits for that, so every
    worker started is kept busy and takes part."""
    record("once", n=n)
    wait_for(
        lambda: len({r["pid"] for r in lines() if r["kind"] == "once"}) >= 2,
        timeout=30,
        what="a second worker process",
    )
    return n


@task(backend="retrying", queue_name="retry")
def flaky(tag):
    if not any(r["kind"] == "flaky" and r["tag"] == tag for r in lines()):
        record("flaky", tag=tag)
        raise RuntimeError("the first attempt fails")
    return "second attempt"


def not_a_task(tag):
    """A plain function: a row naming it must never run it."""
    record("ran", tag=tag)
