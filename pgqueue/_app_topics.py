"""The App's topics (publish and subscribe) and schedules (DESIGN.md sections 9 and 10)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ._client import Client
from ._core import schedules, topics
from ._core.schedules import Schedule
from ._core.validate import encode_args
from ._task import Job, Task
from .errors import ValidationError


def _mapping(args: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if args is None:
        return {}
    if not isinstance(args, Mapping):
        raise ValidationError(f"task arguments must be a mapping of names to values, not {args!r}")
    return args


def _task_name(task: Any) -> str:
    if isinstance(task, Task):
        return task.name
    if isinstance(task, str):
        return task
    raise ValidationError(f"expected a Task or a task name, not {task!r}")


def _subscription(
    pattern: str,
    task: Any,
    queue: str | None,
    priority: int | None,
    max_attempts: int | None,
) -> topics.Subscription:
    return topics.Subscription.build(pattern, _task_name(task), queue, priority, max_attempts)


def _target(conn: Any, session: Any) -> Any:
    if conn is not None and session is not None:
        raise ValidationError("pass conn or session, not both")
    return conn if conn is not None else session


class TopicMethods:
    """Mixed into App: sync and async shells over the plans in `_core/topics.py` and
    `_core/schedules.py`. Jobs a publish makes are handles on this App."""

    client: Client
    tasks: dict[str, Task[Any, Any]]
    declared_schedules: dict[str, Schedule]

    # --- topics -------------------------------------------------------------------------

    def subscribe(
        self,
        pattern: str,
        task: Task[Any, Any] | str,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
    ) -> None:
        """Every later publish on a topic matching `pattern` makes a job of `task` (a Task or
        a task name: the subscriber need not be imported here). Durable (a row) and
        idempotent; subscribing again updates the options. `queue`, `priority` and
        `max_attempts` default to the task's. `*` matches one segment, `#` any number."""
        self.client.run(
            topics.subscribe([_subscription(pattern, task, queue, priority, max_attempts)])
        )

    async def subscribe_async(
        self,
        pattern: str,
        task: Task[Any, Any] | str,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
    ) -> None:
        await self.client.run_async(
            topics.subscribe([_subscription(pattern, task, queue, priority, max_attempts)])
        )

    def unsubscribe(self, pattern: str, task: Task[Any, Any] | str) -> bool:
        """Remove a subscription (jobs already published stay); False if there was none."""
        return self.client.run(topics.unsubscribe(pattern, _task_name(task)))

    async def unsubscribe_async(self, pattern: str, task: Task[Any, Any] | str) -> bool:
        return await self.client.run_async(topics.unsubscribe(pattern, _task_name(task)))

    def publish(
        self,
        topic: str,
        args: Mapping[str, Any] | None = None,
        conn: Any = None,
        session: Any = None,
    ) -> list[Job]:
        """One job per subscription matching `topic`, all in one transaction (the caller's,
        with `conn` / `session`): all of them or none. Returns the jobs, an empty list when
        nothing subscribes. Each subscriber's queue wakes once, at commit."""
        # One statement: atomic by itself, so no BEGIN/COMMIT round trips on a pool.
        plan = topics.publish(topic, [encode_args(_mapping(args))])
        ids = self.client.run(plan, _target(conn, session))
        return [Job(i, False, self) for i in ids]

    async def publish_async(
        self,
        topic: str,
        args: Mapping[str, Any] | None = None,
        conn: Any = None,
        session: Any = None,
    ) -> list[Job]:
        plan = topics.publish(topic, [encode_args(_mapping(args))])
        ids = await self.client.run_async(plan, _target(conn, session))
        return [Job(i, False, self) for i in ids]

    def publish_many(
        self,
        topic: str,
        items: Iterable[Mapping[str, Any]],
        conn: Any = None,
        session: Any = None,
    ) -> list[Job]:
        """Publish several messages to one topic: one statement per chunk of 1,000, all or
        nothing."""
        encoded = [encode_args(_mapping(a)) for a in items]
        plan = topics.publish(topic, encoded)
        atomic = len(encoded) > topics.PUBLISH_CHUNK  # several statements: one transaction
        ids = self.client.run(plan, _target(conn, session), atomic=atomic)
        return [Job(i, False, self) for i in ids]

    async def publish_many_async(
        self,
        topic: str,
        items: Iterable[Mapping[str, Any]],
        conn: Any = None,
        session: Any = None,
    ) -> list[Job]:
        encoded = [encode_args(_mapping(a)) for a in items]
        plan = topics.publish(topic, encoded)
        atomic = len(encoded) > topics.PUBLISH_CHUNK
        ids = await self.client.run_async(plan, _target(conn, session), atomic=atomic)
        return [Job(i, False, self) for i in ids]

    def subscriptions(self) -> list[dict[str, Any]]:
        """Rows of the `subscriptions` view (`pgqueue topics`)."""
        return self.client.run(topics.list_subscriptions())

    async def subscriptions_async(self) -> list[dict[str, Any]]:
        return await self.client.run_async(topics.list_subscriptions())

    # --- schedules ----------------------------------------------------------------------

    def periodic(
        self,
        task: Task[Any, Any] | str,
        cron: str,
        name: str | None = None,
        args: Mapping[str, Any] | None = None,
        tz: str = "UTC",
        queue: str | None = None,
        priority: int | None = None,
        catch_up: str = "latest",
    ) -> Schedule:
        """Declare a schedule: a job of `task` for every slot of `cron` in time zone `tz`.

        Written when a worker starts, and fired by the elected worker while at least one
        live worker declares it (so removing it from the code stops it). Each slot makes
        exactly one job. `name` defaults to the task's name. After a downtime `catch_up`
        decides: "latest" runs the most recent missed slot once, "all" every missed slot
        (the 100 most recent), "none" waits for the next slot. Nothing is written here, so
        bad input fails at once with ValidationError.
        """
        task_name = _task_name(task)
        if isinstance(task, Task):
            task.check_arguments((), _mapping(args))
        schedule = Schedule.build(
            name=task_name if name is None else name,
            task=task_name,
            cron=cron,
            tz=tz,
            args=_mapping(args),
            queue=queue,
            priority=priority,
            catch_up=catch_up,
        )
        schedules.check_unique(self.declared_schedules.values(), schedule)
        self.declared_schedules[schedule.name] = schedule
        return schedule

    def pause_schedule(self, name: str) -> None:
        """Stop a schedule from firing (every worker, until resumed)."""
        self.client.run(schedules.pause(name, True))

    async def pause_schedule_async(self, name: str) -> None:
        await self.client.run_async(schedules.pause(name, True))

    def resume_schedule(self, name: str) -> None:
        """Fire a paused schedule again, from its next slot (the ones missed are skipped)."""
        self.client.run(schedules.pause(name, False))

    async def resume_schedule_async(self, name: str) -> None:
        await self.client.run_async(schedules.pause(name, False))

    def schedules(self) -> list[dict[str, Any]]:
        """Rows of the `schedules` view (`pgqueue schedules`)."""
        return self.client.run(schedules.list_schedules())

    async def schedules_async(self) -> list[dict[str, Any]]:
        return await self.client.run_async(schedules.list_schedules())
