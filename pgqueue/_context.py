"""What a running task may ask about its own job, and do with it: `pgqueue.current_job()`.

Besides the job's identity, the context carries the workflow tools: durable steps, child
jobs spawned once and gathered, durable sleep, and completing the job inside the caller's
transaction. A job function re-runs from the top after a retry, a rescue or a resume, so
every tool is keyed deterministically (by step name, or by its call order for spawns and
sleeps) and replays what a previous run already did instead of doing it again.
"""

from __future__ import annotations

import contextvars
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ._core import workflow
from ._core.claiming import ClaimedJob
from ._core.validate import encode_result
from .errors import JobFailed, JobNotFound, ValidationError

if TYPE_CHECKING:
    from ._task import Job, Task, TaskCall

#: The claimed row itself; the JobContext is built only for a task that asks for it.
current: contextvars.ContextVar[ClaimedJob] = contextvars.ContextVar("pgqueue_current_job")
#: The App whose worker runs the job (what the workflow tools talk to the database through).
current_host: contextvars.ContextVar[Any] = contextvars.ContextVar("pgqueue_current_host")


class Suspended(BaseException):
    """The run stops here and the job waits (its children, or a durable sleep); it resumes
    from the top later, replaying what it did. A BaseException, so a task's own `except
    Exception` cannot swallow it."""

    def __init__(self, delay: float | None) -> None:
        super().__init__("suspended" if delay is None else f"sleeping {delay:g} s")
        self.delay = delay


class _Run:
    """Per-run state of the workflow tools: created at a run's first use, gone with it."""

    def __init__(self, job: ClaimedJob, host: Any) -> None:
        self.job = job
        self.host = host
        self.steps: dict[str, Any] | None = None
        self.used: set[str] = set()
        self.spawns = 0
        self.sleeps = 0
        #: `complete(conn=...)` succeeded: the worker's own completion is then a quiet no-op.
        self.completed = False


_run_state: contextvars.ContextVar[_Run] = contextvars.ContextVar("pgqueue_run")


def completed_by_task(job: ClaimedJob) -> bool:
    """Did this run complete its job itself, in the caller's transaction?"""
    run = _run_state.get(None)
    return run is not None and run.job is job and run.completed


def _run() -> _Run:
    try:
        job = current.get()
    except LookupError:
        raise LookupError(
            "the workflow tools of current_job() work only inside a running task"
        ) from None
    run = _run_state.get(None)
    if run is None or run.job is not job:
        run = _Run(job, current_host.get())
        _run_state.set(run)
    return run


def _call(host: Any, task: Any) -> TaskCall[Any, Any]:
    """A Task, a TaskCall (with options) or a task name, as something that builds specs."""
    from ._task import Task, TaskCall

    if isinstance(task, TaskCall):
        return task
    if isinstance(task, Task):
        return task.options()
    if isinstance(task, str):
        return host._by_name(task, {})  # type: ignore[no-any-return]
    raise ValidationError(f"spawn and map take a task, a task.options(...) or a name, not {task!r}")


@dataclass(frozen=True)
class JobContext:
    """What a running task may ask about its own job (`pgqueue.current_job()`)."""

    id: int
    task: str
    queue: str
    attempt: int
    max_attempts: int
    #: For a job a schedule made: the slot it is for (the time the cron expression named,
    #: not when the job started), the same for every attempt. None for any other job.
    scheduled_for: datetime | None = None

    # --- dependencies ---------------------------------------------------------------------

    @property
    def parent_results(self) -> dict[int, Any]:
        """The results of the jobs this one ran `after`, by job id."""
        run = _run()
        return run.host.client.run(workflow.parent_results(self.id))  # type: ignore[no-any-return]

    # --- durable steps --------------------------------------------------------------------

    def _steps(self, run: _Run) -> dict[str, Any]:
        if run.steps is None:
            run.steps = run.host.client.run(workflow.load_steps(self.id))
        return run.steps

    async def _steps_async(self, run: _Run) -> dict[str, Any]:
        if run.steps is None:
            run.steps = await run.host.client.run_async(workflow.load_steps(self.id))
        return run.steps

    @staticmethod
    def _claim_name(run: _Run, name: str) -> None:
        if not isinstance(name, str) or not 1 <= len(name) <= 200:
            raise ValidationError(f"a step name is a string of 1-200 characters, not {name!r}")
        if name in run.used:
            raise ValidationError(f"step {name!r} already ran in this run: step names are unique")
        run.used.add(name)

    def step(self, name: str, fn: Callable[..., Any], /, *, conn: Any = None, **kwargs: Any) -> Any:
        """Run `fn(**kwargs)` once for this job and store its JSON result; on a later run of
        the job, return the stored result without running it. With `conn=`, the checkpoint
        is written in that connection's transaction, so the step's own database effect and
        its checkpoint commit (or roll back) together."""
        run = _run()
        self._claim_name(run, name)
        steps = self._steps(run)
        if name in steps:
            return steps[name]
        text = encode_result(fn(**kwargs))
        run.host.client.run(workflow.save_step(self.id, run.job.lease, name, text), conn)
        steps[name] = json.loads(text)
        return steps[name]

    async def step_async(
        self, name: str, fn: Callable[..., Any], /, *, conn: Any = None, **kwargs: Any
    ) -> Any:
        """`step` for async tasks: `fn` may be a coroutine function."""
        run = _run()
        self._claim_name(run, name)
        steps = await self._steps_async(run)
        if name in steps:
            return steps[name]
        value = fn(**kwargs)
        if hasattr(value, "__await__"):
            value = await value
        text = encode_result(value)
        await run.host.client.run_async(
            workflow.save_step(self.id, run.job.lease, name, text), conn
        )
        steps[name] = json.loads(text)
        return steps[name]

    # --- children -------------------------------------------------------------------------

    @staticmethod
    def _spawn_call(run: _Run, task: Any) -> tuple[str, TaskCall[Any, Any]]:
        """The step name this spawn is recorded under (by its order in the run) and the call
        that builds the children's specs and handles. The specs are built only for a spawn
        not recorded yet: a replay (every resume of a parent that gathers) would otherwise
        validate and encode every child's arguments again for nothing, 20 ms of a
        3,000-child join."""
        call = _call(run.host, task)
        name = f"spawn:{run.spawns}"
        run.spawns += 1
        return name, call

    def map(
        self, task: Task[Any, Any] | TaskCall[Any, Any] | str, items: Iterable[Mapping[str, Any]]
    ) -> list[Job]:
        """One child job per item, created once for this job: a later run (after a retry or
        a resume) gets the same children back instead of new ones. Children are matched to
        calls by their order in the run, so spawn in the same order every run."""
        run = _run()
        name, call = self._spawn_call(run, task)
        steps = self._steps(run)
        if name not in steps:
            specs = call._many(items)
            ids = run.host.client.run(
                workflow.spawn(self.id, run.job.lease, name, specs), atomic=True
            )
            steps[name] = ids
        return [call._job((i, False)) for i in steps[name]]

    async def map_async(
        self, task: Task[Any, Any] | TaskCall[Any, Any] | str, items: Iterable[Mapping[str, Any]]
    ) -> list[Job]:
        run = _run()
        name, call = self._spawn_call(run, task)
        steps = await self._steps_async(run)
        if name not in steps:
            specs = call._many(items)
            ids = await run.host.client.run_async(
                workflow.spawn(self.id, run.job.lease, name, specs), atomic=True
            )
            steps[name] = ids
        return [call._job((i, False)) for i in steps[name]]

    def spawn(self, task: Task[Any, Any] | TaskCall[Any, Any] | str, /, **kwargs: Any) -> Job:
        """One child job, created once for this job (see `map`)."""
        return self.map(task, [kwargs])[0]

    async def spawn_async(
        self, task: Task[Any, Any] | TaskCall[Any, Any] | str, /, **kwargs: Any
    ) -> Job:
        return (await self.map_async(task, [kwargs]))[0]

    def _gather_ids(self, steps: dict[str, Any], jobs: Iterable[Any]) -> list[int]:
        ids = [getattr(j, "id", j) for j in jobs]
        mine = {i for key, value in steps.items() if key.startswith("spawn:") for i in value}
        strangers = [i for i in ids if i not in mine]
        if strangers:
            raise ValidationError(
                f"gather takes jobs this job spawned (ctx.spawn / ctx.map), not {strangers}"
            )
        return ids

    @staticmethod
    def _gathered(state: workflow.Gathered) -> list[Any]:
        if state.missing is not None:
            raise JobNotFound(f"job {state.missing}, which this job spawned, no longer exists")
        if state.pending:
            raise Suspended(None)
        if state.failed is not None:
            raise JobFailed(*state.failed)
        return state.results

    def gather(self, jobs: Iterable[Job | int]) -> list[Any]:
        """The children's results, in order, once all have ended; until then the job
        suspends (it leaves its slot, `waiting`, no attempt spent) and runs again from the
        top when the last child ends. A child that failed or was cancelled raises JobFailed."""
        run = _run()
        steps = self._steps(run)
        ids = self._gather_ids(steps, jobs)
        if not ids:
            return []
        return self._gathered(run.host.client.run(workflow.gather_state(ids)))

    async def gather_async(self, jobs: Iterable[Job | int]) -> list[Any]:
        run = _run()
        steps = await self._steps_async(run)
        ids = self._gather_ids(steps, jobs)
        if not ids:
            return []
        return self._gathered(await run.host.client.run_async(workflow.gather_state(ids)))

    # --- durable sleep --------------------------------------------------------------------

    def _sleep_step(self, run: _Run, seconds: float) -> tuple[str, float]:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            raise ValidationError(f"sleep takes a non-negative number of seconds, not {seconds!r}")
        name = f"sleep:{run.sleeps}"
        run.sleeps += 1
        return name, time.time() + float(seconds)

    def sleep(self, seconds: float) -> None:
        """Suspend the job for `seconds` without holding a slot; it resumes from the top
        and this call then returns at once."""
        run = _run()
        name, wake = self._sleep_step(run, seconds)
        steps = self._steps(run)
        if name not in steps:
            run.host.client.run(workflow.save_step(self.id, run.job.lease, name, json.dumps(wake)))
            steps[name] = wake
        left = float(steps[name]) - time.time()
        if left > 0:
            raise Suspended(left)

    async def sleep_async(self, seconds: float) -> None:
        run = _run()
        name, wake = self._sleep_step(run, seconds)
        steps = await self._steps_async(run)
        if name not in steps:
            await run.host.client.run_async(
                workflow.save_step(self.id, run.job.lease, name, json.dumps(wake))
            )
            steps[name] = wake
        left = float(steps[name]) - time.time()
        if left > 0:
            raise Suspended(left)

    # --- exactly-once effects -------------------------------------------------------------

    def complete(self, conn: Any = None, *, session: Any = None, result: Any = None) -> None:
        """Mark the job completed inside the caller's transaction (`conn` or `session`),
        fenced by this run's lease: if the job was rescued and claimed again, raise
        LeaseLost so the transaction, and the effect it holds, rolls back."""
        run = _run()
        target = self._target(conn, session)
        text = encode_result(result)
        client = run.host.client
        client.run(
            workflow.complete_in(self.id, run.job.lease, text, client.queries.done_channel),
            target,
        )
        run.completed = True

    async def complete_async(
        self, conn: Any = None, *, session: Any = None, result: Any = None
    ) -> None:
        run = _run()
        target = self._target(conn, session)
        text = encode_result(result)
        client = run.host.client
        await client.run_async(
            workflow.complete_in(self.id, run.job.lease, text, client.queries.done_channel),
            target,
        )
        run.completed = True

    @staticmethod
    def _target(conn: Any, session: Any) -> Any:
        if (conn is None) == (session is None):
            raise ValidationError("complete takes the caller's conn= or session=, exactly one")
        return conn if conn is not None else session


def current_job() -> JobContext:
    """The job the calling task is running for; raises LookupError outside a task."""
    try:
        job = current.get()
    except LookupError:
        raise LookupError("current_job() is only available inside a running task") from None
    return JobContext(job.id, job.task, job.queue, job.attempt, job.max_attempts, job.scheduled_for)
