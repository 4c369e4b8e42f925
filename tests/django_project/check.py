"""Checks of the pgqueue backend through the public `django.tasks` API, run under the Django
being tested (tests/test_django.py starts this script with each venv's interpreter, after
`manage.py migrate`). Workers are real `manage.py pgqueue_worker --burst` processes.

Usage: python check.py SCENARIO... ; prints one JSON line per scenario: name, ok, error.
Each scenario uses queues of its own, so scenarios may run side by side; those that need no
worker of their own yield their queue and share one worker run (`run_shared`).
"""

import asyncio
import datetime
import inspect
import json
import os
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djproject.settings")
sys.path.insert(0, str(HERE))

import django  # noqa: E402

django.setup()

from django.db import connection, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

try:
    from django.tasks import TaskResultStatus, default_task_backend, task_backends
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist, TaskResultMismatch
except ImportError:  # Django 5.2 with the backport
    from django_tasks import TaskResultStatus, default_task_backend, task_backends
    from django_tasks.exceptions import InvalidTaskError as InvalidTask
    from django_tasks.exceptions import TaskResultDoesNotExist, TaskResultMismatch

from djapp import tasks  # noqa: E402
from djapp.recording import lines  # noqa: E402

READY, RUNNING = TaskResultStatus.READY, TaskResultStatus.RUNNING
SUCCESSFUL, FAILED = TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED


def worker(*queues, backend="default", concurrency=4, background=False):
    """`manage.py pgqueue_worker --burst` on these queues, as a real process."""
    args = [sys.executable, "manage.py", "pgqueue_worker", "--burst", "--log-level", "WARNING"]
    args += ["--backend", backend, "--concurrency", str(concurrency)]
    for queue in queues:
        args += ["--queue", queue]
    proc = subprocess.Popen(
        args, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if background:
        return proc
    return finish(proc)


def finish(proc):
    out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, f"worker exited {proc.returncode}:\n{out}"
    return out


def refreshed(result):
    result.refresh()
    return result


# --- scenarios ----------------------------------------------------------------------------


def results_and_fields():
    backend = task_backends["default"]
    assert backend.supports_defer and backend.supports_async_task
    assert backend.supports_get_result and backend.supports_priority
    before = timezone.now()
    result = tasks.add.enqueue(2, b=3)
    assert isinstance(result.id, str) and result.id.isdigit() and len(result.id) < 64
    assert result.status == READY and not result.is_finished
    assert result.task.func is tasks.add.func and result.backend == "default"
    assert result.args == [2] and result.kwargs == {"b": 3}
    assert result.enqueued_at is not None and timezone.is_aware(result.enqueued_at)
    assert before - datetime.timedelta(seconds=5) <= result.enqueued_at
    assert (result.started_at, result.last_attempted_at, result.finished_at) == (None,) * 3
    assert result.errors == [] and result.worker_ids == [] and result.attempts == 0
    try:
        result.return_value  # noqa: B018
        raise AssertionError("return_value of an unfinished task must raise")
    except ValueError as exc:
        assert "not finished" in str(exc)
    fetched = default_task_backend.get_result(result.id)
    assert (fetched.id, fetched.status, fetched.enqueued_at) == (
        result.id,
        READY,
        result.enqueued_at,
    )
    tuple_result = tasks.returns_tuple.enqueue()
    unstorable = tasks.returns_unstorable.enqueue()
    from djapp import other  # a module the worker never imports by itself

    doubled = other.double.enqueue(4)
    yield "default"  # the shared worker run
    done = refreshed(result)
    assert done.status == SUCCESSFUL and done.is_finished, done.status
    assert done.return_value == 5
    assert done.enqueued_at <= done.started_at <= done.finished_at
    assert done.last_attempted_at == done.started_at
    assert done.attempts == 1 and len(done.worker_ids) == 1 and done.worker_ids[0]
    assert done.errors == []
    again = tasks.add.get_result(result.id)
    assert again.return_value == 5 and again.task.func is tasks.add.func
    try:
        tasks.fail.get_result(result.id)
        raise AssertionError("another task's get_result must refuse this result")
    except TaskResultMismatch:
        pass
    assert refreshed(tuple_result).return_value == [1, "two", "three"]
    assert refreshed(doubled).return_value == 8
    bad = refreshed(unstorable)
    assert bad.status == FAILED and bad.errors[0].exception_class_path == "builtins.TypeError"
    for missing in ("999999999", "not-an-id", "", "1" * 30):
        try:
            default_task_backend.get_result(missing)
            raise AssertionError(f"{missing!r} must not be found")
        except TaskResultDoesNotExist:
            pass


def errors_and_tracebacks():
    sync = tasks.fail.enqueue("boom")
    coro = tasks.async_fail.enqueue(message="async boom")
    exits = tasks.exits.enqueue()
    yield "errors"  # the shared worker run (which must not exit with the task)
    exited = refreshed(exits)
    assert exited.status == FAILED
    assert [e.exception_class_path for e in exited.errors] == ["builtins.SystemExit"]
    for result, message in ((sync, "boom"), (coro, "async boom")):
        failed = refreshed(result)
        assert failed.status == FAILED and failed.is_finished
        assert failed.finished_at is not None and failed.finished_at >= failed.started_at
        assert failed.attempts == 1, "a Django task runs once unless MAX_ATTEMPTS says more"
        assert len(failed.errors) == 1
        error = failed.errors[0]
        assert error.exception_class_path == "djapp.tasks.Boom", error.exception_class_path
        assert error.exception_class is tasks.Boom
        assert error.traceback.startswith("Traceback (most recent call last)")
        assert f"djapp.tasks.Boom: {message}" in error.traceback
        assert "tasks.py" in error.traceback
        try:
            failed.return_value  # noqa: B018
            raise AssertionError("return_value of a failed task must raise")
        except ValueError as exc:
            assert "failed" in str(exc)


def retries_with_max_attempts():
    result = tasks.flaky.enqueue(tag="retry-1")
    assert result.backend == "retrying"
    worker("retry", backend="retrying")
    first = refreshed(result)
    assert first.status == READY, "a failed attempt with one left is READY again"
    assert first.attempts == 1 and len(first.errors) == 1
    assert first.errors[0].exception_class_path == "builtins.RuntimeError"
    deadline = time.monotonic() + 20  # the backoff is about 2 s
    while refreshed(result).status != SUCCESSFUL:
        assert time.monotonic() < deadline, f"still {result.status} after the backoff"
        time.sleep(0.3)
        worker("retry", backend="retrying", concurrency=1)
    assert result.return_value == "second attempt"
    assert result.attempts == 2 and len(result.worker_ids) == 2 and len(result.errors) == 1


def takes_context():
    sync = tasks.with_context.enqueue(tag="ctx")
    coro = tasks.async_with_context.enqueue(tag="actx")
    yield "context"  # the shared worker run
    value = refreshed(sync).return_value
    assert value == {"attempt": 1, "id": sync.id, "status": "RUNNING", "tag": "ctx"}, value
    assert refreshed(coro).return_value == {"attempt": 1, "id": coro.id, "tag": "actx"}


def async_tasks():
    async def enqueue():
        result = await tasks.async_add.aenqueue(20, b=22)
        assert result.status == READY
        return result, await tasks.add.using(queue_name="async").aenqueue(1, 1)

    async def verify(result, sync_in_async):
        fetched = await default_task_backend.aget_result(result.id)
        assert fetched.status == SUCCESSFUL and fetched.return_value == 42
        await result.arefresh()
        assert result.return_value == 42 and result.attempts == 1
        assert (await tasks.add.aget_result(sync_in_async.id)).return_value == 2

    result, sync_in_async = asyncio.run(enqueue())
    yield "async"  # the shared worker run
    asyncio.run(verify(result, sync_in_async))


def rolled_back_enqueues():
    kept = tasks.mark.enqueue("kept")
    try:
        with transaction.atomic():
            gone = tasks.mark.enqueue("rolled-back")
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    with transaction.atomic():
        outer = tasks.mark.enqueue("outer")
        try:
            with transaction.atomic():  # a savepoint
                inner = tasks.mark.enqueue("savepoint")
                raise RuntimeError("roll back the savepoint only")
        except RuntimeError:
            pass
    yield "tx"  # the shared worker run
    ran = sorted(r["tag"] for r in lines() if r["kind"] == "ran" and r["tag"] in (
        "kept", "rolled-back", "outer", "savepoint"))  # fmt: skip
    assert ran == ["kept", "outer"], ran
    assert refreshed(kept).status == SUCCESSFUL and refreshed(outer).status == SUCCESSFUL
    for result in (gone, inner):
        try:
            default_task_backend.get_result(result.id)
            raise AssertionError("a rolled-back enqueue must leave no result")
        except TaskResultDoesNotExist:
            pass


def transaction_visibility():
    """Inside atomic() the job is visible on this connection and to nobody else; an unknown
    id raises TaskResultDoesNotExist and the transaction goes on and commits."""
    seen_elsewhere = []

    def look(result_id):
        try:
            default_task_backend.get_result(result_id)
            seen_elsewhere.append(True)
        except TaskResultDoesNotExist:
            seen_elsewhere.append(False)
        finally:
            from django.db import connections

            connections.close_all()

    with transaction.atomic():
        result = tasks.mark.using(queue_name="tx").enqueue("visible")
        assert default_task_backend.get_result(result.id).status == READY
        other = threading.Thread(target=look, args=(result.id,))
        other.start()
        other.join()
        assert seen_elsewhere == [False], "another connection saw an uncommitted job"
        for missing in ("987654321", "not-an-id", "9" * 25):  # unknown, no id, out of range
            try:
                default_task_backend.get_result(missing)
                raise AssertionError(f"{missing!r} must not be found")
            except TaskResultDoesNotExist:
                pass
        with connection.cursor() as cur:  # the transaction is not aborted
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
        after_miss = tasks.mark.enqueue("after-a-miss")
    other = threading.Thread(target=look, args=(result.id,))
    other.start()
    other.join()
    assert seen_elsewhere == [False, True], seen_elsewhere
    assert default_task_backend.get_result(after_miss.id).status == READY


def run_after():
    """A deferred job waits for its run_after (one an hour away is left by a worker run) and
    runs once it is due."""
    later = timezone.now() + datetime.timedelta(hours=1)
    soon = timezone.now() + datetime.timedelta(seconds=1)
    waiting = tasks.mark.using(queue_name="later", run_after=later).enqueue("in an hour")
    due = tasks.mark.using(queue_name="later", run_after=soon).enqueue("soon")
    assert waiting.status == READY and waiting.task.run_after == later
    assert default_task_backend.get_result(due.id).task.run_after == soon
    deadline = time.monotonic() + 20
    while timezone.now() < soon:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    worker("later")
    assert refreshed(due).status == SUCCESSFUL
    assert due.started_at >= soon
    assert refreshed(waiting).status == READY, "ran before its run_after"
    assert waiting.started_at is None and waiting.attempts == 0


def priority_order():
    low = tasks.ordinary.using(priority=-100).enqueue("low")
    mid = tasks.ordinary.enqueue("mid")
    high = tasks.urgent.enqueue("high")
    top = tasks.ordinary.using(priority=100).enqueue("top")
    assert (low.task.priority, mid.task.priority, high.task.priority) == (-100, 0, 50)
    assert default_task_backend.get_result(top.id).task.priority == 100
    worker("prio", concurrency=1)
    order = [r["tag"] for r in lines() if r["kind"] == "ran" and r["tag"] in (
        "low", "mid", "high", "top")]  # fmt: skip
    assert order == ["top", "high", "mid", "low"], order


def queue_routing():
    in_a = tasks.mark.using(queue_name="a").enqueue("in-a")
    in_b = tasks.mark.using(queue_name="b").enqueue("in-b")
    assert default_task_backend.get_result(in_b.id).task.queue_name == "b"
    worker("a")
    assert refreshed(in_a).status == SUCCESSFUL
    assert refreshed(in_b).status == READY, "a worker for queue a ran a job of queue b"
    worker("b")
    assert refreshed(in_b).status == SUCCESSFUL


def worker_refuses_queues_outside_QUEUES():
    try:
        tasks.mark.using(queue_name="not-listed")
        raise AssertionError("a queue missing from QUEUES must be refused")
    except InvalidTask:
        pass
    out = subprocess.run(
        [sys.executable, "manage.py", "pgqueue_worker", "--burst", "--queue", "not-listed"],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and "not-listed" in out.stderr, out


def concurrency():
    peers = 4
    results = [tasks.rendezvous.enqueue(tag=f"c{i}", peers=peers) for i in range(peers)]
    worker("conc", concurrency=peers)
    assert [refreshed(r).status for r in results] == [SUCCESSFUL] * peers
    assert sorted(r.return_value for r in results) == [f"c{i}" for i in range(peers)]


def several_workers_each_job_once():
    results = [tasks.once.enqueue(n) for n in range(60)]
    procs = [worker("many", concurrency=2, background=True) for _ in range(3)]
    for proc in procs:
        finish(proc)
    runs = [r for r in lines() if r["kind"] == "once"]
    assert sorted(r["n"] for r in runs) == list(range(60)), f"each job once: {len(runs)} runs"
    assert len({r["pid"] for r in runs}) >= 2, "only one worker process ran jobs"
    assert all(refreshed(r).status == SUCCESSFUL and r.attempts == 1 for r in results)


def signals():
    ok = tasks.mark.using(queue_name="signals").enqueue("signalled")
    bad = tasks.fail.using(queue_name="signals").enqueue("signalled failure")
    enqueued = [r for r in lines() if r["kind"] == "signal" and r["signal"] == "enqueued"]
    mine = {r["id"]: r for r in enqueued if r["id"] in (ok.id, bad.id)}
    assert set(mine) == {ok.id, bad.id}, enqueued
    sender = "pgqueue.contrib.django.backend.PgQueueBackend"
    assert all(r["sender"] == sender and r["status"] == "READY" for r in mine.values())
    assert all(r["pid"] == os.getpid() for r in mine.values()), "sent by the enqueuing process"
    yield "signals"  # the shared worker run
    got = [
        (r["signal"], r["id"], r["status"], r["attempts"], r["errors"])
        for r in lines()
        if r["kind"] == "signal" and r["id"] in (ok.id, bad.id) and r["pid"] != os.getpid()
    ]
    assert sorted(got) == sorted(
        [
            ("started", ok.id, "RUNNING", 1, []),
            ("finished", ok.id, "SUCCESSFUL", 1, []),
            ("started", bad.id, "RUNNING", 1, []),
            ("finished", bad.id, "FAILED", 1, ["djapp.tasks.Boom"]),
        ]
    ), got


def validation():
    def local():
        return None

    cases = {
        "priority above 100": lambda: tasks.add.using(priority=101),
        "priority below -100": lambda: tasks.add.using(priority=-101),
        "fractional priority": lambda: tasks.add.using(priority=1.5),
        "naive run_after": lambda: tasks.add.using(run_after=datetime.datetime(2030, 1, 1)),
        "queue not in QUEUES": lambda: tasks.add.using(queue_name="nope"),
        "a local function": lambda: type(tasks.add)(func=local),
    }
    for what, build in cases.items():
        try:
            build()
            raise AssertionError(f"{what} was accepted")
        except InvalidTask:
            pass
    try:
        tasks.add.enqueue(1, b=object())
        raise AssertionError("an argument JSON cannot hold was accepted")
    except TypeError:
        pass
    try:
        tasks.add.enqueue(1, b=float("nan"))
        raise AssertionError("NaN was accepted")
    except TypeError:
        pass


def backend_options_and_checks():
    """OPTIONS are checked when the backend is built (without a database), and `manage.py
    check` reports a backend on a database that does not exist or is not PostgreSQL."""
    from django.core.exceptions import ImproperlyConfigured

    from pgqueue.contrib.django import PgQueueBackend

    base = {"BACKEND": "pgqueue.contrib.django.PgQueueBackend"}
    for options in ({"MAX_ATTEMPTS": 0}, {"SCHEMA": "Not A Schema"}, {"TIMEOUT": 3}):
        try:
            PgQueueBackend("bad", {**base, "OPTIONS": options})
            raise AssertionError(f"OPTIONS {options} were accepted")
        except ImproperlyConfigured:
            pass
    backend = PgQueueBackend("ok", {**base, "OPTIONS": {"MAX_ATTEMPTS": 3, "SCHEMA": "jobs"}})
    assert (backend.max_attempts, backend.schema, backend.database) == (3, "jobs", "default")
    assert backend.check() == []
    missing = PgQueueBackend("missing", {**base, "OPTIONS": {"DATABASE": "absent"}})
    assert [m.id for m in missing.check()] == ["pgqueue.E002"]
    from django.core.management import call_command

    call_command("check")  # the project's own backends pass


def only_installed_app_tasks_run():
    """Rows naming anything but a Django task of an installed app fail without running it,
    whoever wrote them (here: SQL, the interface any client has)."""
    names = [
        "os.system",
        "outside.tasks.sneaky",  # a real Django task, in a package that is no installed app
        "djapp.tasks.not_a_task",
        "djapp.tasks.Boom",
        "djapp.nothing.here",
    ]
    ids = []
    with connection.cursor() as cur:
        for name in names:
            cur.execute(
                "SELECT pgqueue.enqueue(%s, %s::jsonb, 'unknown', max_attempts => 1)",
                [name, json.dumps({"args": ["touch /tmp/pgqueue-owned"]})],
            )
            ids.append(cur.fetchone()[0])
    yield "unknown"  # the shared worker run
    with connection.cursor() as cur:
        cur.execute(
            "SELECT state, errors -> 0 ->> 'type' FROM pgqueue.jobs WHERE id = ANY(%s) ORDER BY id",
            [ids],
        )
        rows = cur.fetchall()
        assert rows == [("failed", "UnknownTask")] * len(names), rows
    assert not os.path.exists("/tmp/pgqueue-owned")
    assert not any(r["kind"] == "imported" for r in lines()), "a worker imported outside.tasks"
    assert not any(r["kind"] == "ran" and r["tag"] == "touch /tmp/pgqueue-owned" for r in lines())
    for job_id in ids:
        try:
            default_task_backend.get_result(str(job_id))
            raise AssertionError("a row that is no Django task must not be a result")
        except TaskResultDoesNotExist:
            pass


def constructor_touches_no_database():
    started = time.monotonic()
    from djapp import lazy  # builds the "nowhere" backend, whose database does not answer

    assert lazy.unreachable.get_backend().alias == "nowhere"
    assert time.monotonic() - started < 5
    from django.db import OperationalError

    try:
        lazy.unreachable.enqueue()
        raise AssertionError("enqueue on an unreachable database succeeded")
    except OperationalError:
        pass


SCENARIOS = {
    f.__name__: f
    for f in (
        results_and_fields,
        errors_and_tracebacks,
        retries_with_max_attempts,
        takes_context,
        async_tasks,
        rolled_back_enqueues,
        transaction_visibility,
        run_after,
        priority_order,
        queue_routing,
        worker_refuses_queues_outside_QUEUES,
        concurrency,
        several_workers_each_job_once,
        signals,
        validation,
        backend_options_and_checks,
        only_installed_app_tasks_run,
        constructor_touches_no_database,
    )
}


def _report(name, started, error):
    from django.db import connections

    connections.close_all()
    return {"scenario": name, "ok": error is None, "error": error, "s": time.monotonic() - started}


def run(name):
    """A plain scenario, alone, with its own worker runs."""
    started = time.monotonic()
    try:
        SCENARIOS[name]()
        error = None
    except BaseException:
        error = traceback.format_exc()
    return _report(name, started, error)


def run_shared(names):
    """Scenarios written as generators enqueue up to their `yield QUEUE`, then one worker
    run serves all their queues, and each goes on to check its results: one worker start
    instead of one per scenario."""
    started = time.monotonic()
    waiting, reports = {}, []
    for name in names:
        steps = SCENARIOS[name]()
        try:
            waiting[name] = (steps, next(steps))
        except BaseException:
            reports.append(_report(name, started, traceback.format_exc()))
    try:
        if waiting:
            worker(*sorted({queue for _, queue in waiting.values()}))
    except BaseException:
        failure = traceback.format_exc()
        return reports + [_report(name, started, failure) for name in waiting]
    for name, (steps, _queue) in waiting.items():
        try:
            next(steps)
            error = "the scenario yielded twice"
        except StopIteration:
            error = None
        except BaseException:
            error = traceback.format_exc()
        reports.append(_report(name, started, error))
    return reports


if __name__ == "__main__":
    names = sys.argv[1:] or list(SCENARIOS)
    shared = [n for n in names if inspect.isgeneratorfunction(SCENARIOS[n])]
    alone = [n for n in names if n not in shared]
    with ThreadPoolExecutor(int(os.environ.get("PGQUEUE_DJANGO_PARALLEL", "6"))) as pool:
        batch = pool.submit(run_shared, shared)
        for report in pool.map(run, alone):
            print(json.dumps(report), flush=True)
        for report in batch.result():
            print(json.dumps(report), flush=True)
