"""Running tasks: sync ones on daemon threads, async ones as asyncio Tasks; timeouts,
operator cancellation, and the shutdown grace period. Each run ends in an Outcome handed to
the completer (or in nothing, when shutdown releases the job instead)."""

from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
import logging
import queue as queue_mod
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from .._context import Suspended, completed_by_task, current, current_host
from .._core import outcome as outcomes
from .._core.claiming import ClaimedJob, Ledger
from .._core.outcome import Outcome
from .._core.retry import DEFAULT_RETRY, RetryPolicy
from .._logging import redact
from .._task import Task
from .._tracing import job_span, spans_wanted
from ..errors import ConfigurationError, JobTimeout, UnknownTask
from .events import CancelledByRequest, Events, Overdue

log = logging.getLogger("pgqueue.worker")


def _eager_task(coro: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
    """A job's Task that runs its first step at once (Python 3.12+): a job that finishes
    without suspending, as most short ones do, is done before it would have been scheduled,
    with no trip through the event loop (a fifth of a no-op drain worker's loop work). It is
    still a Task of its own, with its own context, as with `create_task`."""
    loop = asyncio.get_running_loop()
    return asyncio.Task(coro, loop=loop, name=name, eager_start=True)  # type: ignore[call-arg]


_start_task: Callable[..., asyncio.Task[None]] = (
    _eager_task if sys.version_info >= (3, 12) else asyncio.create_task
)


class DaemonThreads:
    """A fixed set of daemon threads for sync tasks.

    A sync task cannot be interrupted; with daemon threads, one that hangs past shutdown does
    not keep the process alive (concurrent.futures joins its threads at interpreter exit).

    Results come back to the event loop in batches: a thread appends to `_done` and wakes the
    loop only if no wake-up is already on its way. Waking the loop once per job (a write to its
    self-pipe, a GIL hand-off) costs more than running a short task.
    """

    def __init__(self, size: int) -> None:
        self._queue: queue_mod.SimpleQueue[Any] = queue_mod.SimpleQueue()
        self._done: collections.deque[tuple[asyncio.Future[Any], Any, BaseException | None]]
        self._done = collections.deque()
        self._lock = threading.Lock()
        self._wake_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads = [
            threading.Thread(target=self._serve, name=f"pgqueue-task-{i}", daemon=True)
            for i in range(size)
        ]
        try:
            for thread in self._threads:
                thread.start()
        except RuntimeError as exc:  # the OS refused: too many threads for this process
            self.shutdown()
            raise ConfigurationError(
                f"cannot start {size} task threads ({exc}): lower --concurrency"
            ) from None

    def _serve(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn = item
            try:
                self._done.append((future, fn(), None))
            except BaseException as exc:  # delivered to the waiting future, not lost
                self._done.append((future, None, exc))
            with self._lock:
                if self._wake_pending:
                    continue
                self._wake_pending = True
            assert self._loop is not None
            try:
                self._loop.call_soon_threadsafe(self._deliver)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                return

    def _deliver(self) -> None:
        with self._lock:
            self._wake_pending = False
        while self._done:
            future, result, exc = self._done.popleft()
            if future.done():
                continue
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(result)

    def submit(self, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put((future, fn))
        return future

    def shutdown(self) -> None:
        for _ in self._threads:
            self._queue.put(None)


class Executor:
    """Runs claimed jobs and turns each run into an Outcome."""

    def __init__(
        self,
        tasks: Mapping[str, Task[Any, Any]],
        ledger: Ledger,
        events: Events,
        *,
        record: Callable[[Outcome], None],
        slot_freed: Callable[[int], None],
        began: Callable[[ClaimedJob], None],
        worker_name: str,
        redact_keys: frozenset[str],
        concurrency: int,
        host: Any = None,
    ) -> None:
        self.tasks = tasks
        self.ledger = ledger
        self.events = events
        self.record = record
        self.slot_freed = slot_freed
        self.began = began  # a start the claim did not record, for the completer to write
        self.worker_name = worker_name
        self.redact_keys = redact_keys
        #: Each running job's asyncio Task (async tasks) or thread future (sync tasks).
        self.running: dict[int, asyncio.Future[Any]] = {}
        self.cancelling: set[int] = set()  # runs an operator asked to cancel
        #: From a stop on, a cancelled run is released (unspent), not failed.
        self.releasing = False
        self.concurrency = concurrency
        #: The App, for the workflow tools of current_job() (steps, spawn, gather, ...).
        self.host = host
        self._threads: DaemonThreads | None = None

    @property
    def threads(self) -> DaemonThreads:
        """Started with the first sync job, so a Worker that never runs starts none."""
        if self._threads is None:
            self._threads = DaemonThreads(self.concurrency)
        return self._threads

    def open(self) -> None:
        """Start the threads now, so a process that cannot start them fails at start-up."""
        _ = self.threads

    def shutdown(self) -> None:
        if self._threads is not None:
            self._threads.shutdown()

    # --- starting -------------------------------------------------------------------------

    def start(self, job: ClaimedJob) -> None:
        if not job.started:
            self.began(job)
        task = self.tasks.get(job.task)
        if task is not None and not task.is_async:
            self._start_sync(job, task)
            return
        runner = _start_task(self._run_async(job, task), name=f"pgqueue-job-{job.id}")
        self.running[job.id] = runner
        runner.add_done_callback(functools.partial(self._done, job.id))

    def _done(self, job_id: int, _run: asyncio.Future[Any]) -> None:
        self.running.pop(job_id, None)
        self.ledger.finished(job_id)
        self.slot_freed(job_id)

    def _start_sync(self, job: ClaimedJob, task: Task[Any, Any]) -> None:
        """A sync task runs in a thread that works out the whole outcome; the event loop only
        sees a future settle. No asyncio Task per job: for short jobs its cost outweighed the
        job's own."""
        # A copy of the loop's context per job, so current_job() sees exactly this job.
        run = contextvars.copy_context().run
        future = self.threads.submit(functools.partial(run, self._run_sync, job, task))
        self.running[job.id] = future
        timeout = job.timeout if job.timeout is not None else task.timeout
        timer = None
        if timeout is not None:
            timer = asyncio.get_running_loop().call_later(
                timeout, self._overdue, job, future, timeout
            )
        future.add_done_callback(functools.partial(self._sync_done, job, task.retry, timer))

    # --- running --------------------------------------------------------------------------

    def _run_sync(self, job: ClaimedJob, task: Task[Any, Any]) -> Outcome:
        """Runs on a task thread; touches no worker state, only builds the Outcome."""
        current.set(job)
        current_host.set(self.host)
        debug = self._log_start(job)
        started = time.monotonic()
        try:
            task.check_argument_names(job.args)
            if spans_wanted():
                with job_span(job.id, job.task, job.queue, job.attempt, job.trace):
                    result = task.fn(**job.args)
            else:
                result = task.fn(**job.args)
        except Suspended as exc:
            return outcomes.suspended(job, exc.delay)
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            return self._failure(job, exc, task.retry)
        return self._success(job, result, started, task.retry, debug)

    def _sync_done(
        self,
        job: ClaimedJob,
        policy: RetryPolicy,
        timer: asyncio.TimerHandle | None,
        future: asyncio.Future[Outcome],
    ) -> None:
        if timer is not None:
            timer.cancel()
        self._done(job.id, future)
        if future.cancelled():
            # Cancelled by an operator or at shutdown. The thread cannot be stopped: its
            # eventual return is dropped.
            outcome = self._cancelled(job, policy)
            if outcome is not None:
                self.record(outcome)
        elif (exc := future.exception()) is not None:
            self.record(self._failure(job, exc, policy))
        else:
            self.record(future.result())

    def _overdue(self, job: ClaimedJob, future: asyncio.Future[Outcome], timeout: float) -> None:
        # A thread cannot be interrupted. Past its timeout the job is marked (a warning, and
        # the stuck_jobs view lists it "over timeout"), keeps its slot, and stays `running`
        # so that nothing runs it a second time alongside; its real outcome is recorded when
        # the thread returns. A process wedged for good stops heartbeating and is rescued.
        if future.done():
            return
        self.events.emit(Overdue(job.id))
        log.warning(
            "job %d (%s on %s, attempt %d) passed its timeout of %g s; its thread cannot"
            " be interrupted, so it keeps running and its slot stays taken",
            job.id,
            job.task,
            job.queue,
            job.attempt,
            timeout,
            extra=job.log_extra,
        )

    async def _run_async(self, job: ClaimedJob, task: Task[Any, Any] | None) -> None:
        """An async task (or a row naming no registered task), in its own asyncio Task."""
        policy = task.retry if task is not None else DEFAULT_RETRY
        debug = self._log_start(job)
        started = time.monotonic()
        try:
            result = await self._invoke(task, job)
        except Suspended as exc:
            self.record(outcomes.suspended(job, exc.delay))
        except asyncio.CancelledError:
            outcome = self._cancelled(job, policy)
            if outcome is None:
                raise  # shutdown: the job is released, not failed
            self.record(outcome)
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            self.record(self._failure(job, exc, policy))
        else:
            self.record(self._success(job, result, started, policy, debug))

    async def _invoke(self, task: Task[Any, Any] | None, job: ClaimedJob) -> Any:
        if task is None:
            raise UnknownTask(f"no task named {job.task!r} is registered in this worker")
        kwargs = job.args
        task.check_argument_names(kwargs)
        timeout = job.timeout if job.timeout is not None else task.timeout
        # Each job task has its own context copy, so this is visible to exactly this job.
        current.set(job)
        current_host.set(self.host)
        if spans_wanted():
            with job_span(job.id, job.task, job.queue, job.attempt, job.trace):
                return await self._await(task, kwargs, timeout, job)
        return await self._await(task, kwargs, timeout, job)

    @staticmethod
    async def _await(
        task: Task[Any, Any], kwargs: dict[str, Any], timeout: float | None, job: ClaimedJob
    ) -> Any:
        if timeout is None:
            return await task.fn(**kwargs)
        try:
            return await asyncio.wait_for(task.fn(**kwargs), timeout)
        except asyncio.TimeoutError:
            raise JobTimeout(
                f"task {job.task} exceeded its timeout of {timeout:g} s and was cancelled"
            ) from None

    # --- outcomes -------------------------------------------------------------------------

    def _log_start(self, job: ClaimedJob) -> bool:
        """Log the start at DEBUG; returns whether DEBUG is on (per-job lines cost nothing
        when it is off)."""
        if not log.isEnabledFor(logging.DEBUG):
            return False
        log.debug(
            "job %d (%s on %s, attempt %d) started: %s",
            job.id,
            job.task,
            job.queue,
            job.attempt,
            redact(job.args, self.redact_keys),
            extra=job.log_extra,
        )
        return True

    def _success(
        self, job: ClaimedJob, result: Any, started: float, policy: RetryPolicy, debug: bool
    ) -> Outcome:
        duration = time.monotonic() - started
        outcome = outcomes.success(
            job, result, duration, policy, self.worker_name, quiet=completed_by_task(job)
        )
        if outcome.error is not None:
            self._log_failure(outcome, f"{outcome.error['type']}: {outcome.error['message']}")
        elif debug:
            log.debug(
                "job %d (%s on %s, attempt %d) completed in %.3f s",
                job.id,
                job.task,
                job.queue,
                job.attempt,
                duration,
                extra=job.log_extra,
            )
        return outcome

    def _failure(self, job: ClaimedJob, exc: BaseException, policy: RetryPolicy) -> Outcome:
        """Thread-safe: it only logs and builds a record."""
        task = self.tasks.get(job.task)
        fail_on = task.fail_on if task is not None else ()
        outcome = outcomes.failure(job, exc, policy, self.worker_name, fail_on=fail_on)
        self._log_failure(outcome, f"{type(exc).__name__}: {exc}")
        return outcome

    @staticmethod
    def _log_failure(outcome: Outcome, reason: str) -> None:
        job = outcome.job
        log.warning(
            "job %d (%s on %s, attempt %d/%d) failed: %s -> %s",
            job.id,
            job.task,
            job.queue,
            job.attempt,
            job.max_attempts,
            reason,
            outcome.state.value,
            extra=job.log_extra,
        )

    def _cancelled(self, job: ClaimedJob, policy: RetryPolicy) -> Outcome | None:
        """What a cancelled run comes to; None at shutdown, where the job is released."""
        if job.id in self.cancelling:
            self.cancelling.discard(job.id)
            self.events.emit(CancelledByRequest(job.id))
            return outcomes.cancelled(
                job, asyncio.CancelledError("cancelled by request"), self.worker_name
            )
        if self.releasing:
            return None
        return self._failure(job, asyncio.CancelledError("task was cancelled"), policy)

    # --- steering -------------------------------------------------------------------------

    def cancel(self, job_id: int) -> None:
        """An operator asked this run to stop (`pgqueue cancel` on a running job)."""
        run = self.running.get(job_id)
        if run is not None and job_id not in self.cancelling:
            log.info("job %d: cancel requested, cancelling it", job_id)
            self.cancelling.add(job_id)
            run.cancel()

    def abandon(self) -> None:
        """Stop every run now; their jobs are released, not failed."""
        self.releasing = True
        for run in self.running.values():
            run.cancel()

    async def drain(self, grace: float) -> None:
        """Shutdown: let running jobs finish within the grace period, then release the rest."""
        if not self.running:
            return
        log.info("waiting up to %.0f s for %d running jobs", grace, len(self.running))
        _done, pending = await asyncio.wait(list(self.running.values()), timeout=grace)
        if pending:
            self.abandon()
            await asyncio.gather(*pending, return_exceptions=True)

    async def abandon_all(self) -> None:
        if self.running:
            self.abandon()
            await asyncio.gather(*self.running.values(), return_exceptions=True)
