"""What a worker tells the database as it starts: its tasks, what they subscribe to, its
schedules; and a warning for queue names nothing uses."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol
from uuid import UUID

from .._core import catalog, schedules, topics
from .._core.schedules import Schedule
from .._db.worker import WorkerDb
from .._task import Task

log = logging.getLogger("pgqueue.worker")


class Declares(Protocol):
    """What a worker's App declares (the part of WorkerHost this module reads)."""

    redact_keys: frozenset[str]

    @property
    def tasks(self) -> Mapping[str, Task[Any, Any]]: ...

    @property
    def declared_schedules(self) -> Mapping[str, Schedule]: ...


async def announce(db: WorkerDb, app: Declares, worker_id: UUID, name: str) -> frozenset[str]:
    """Write what this worker's code declares, and return the redaction keys its logs use.

    The catalog learns its tasks (SQL enqueue applies their defaults); the topics its tasks
    subscribe to (`@app.task(topics=...)`) and its schedules (`app.periodic`) are written, the
    schedules firing only while a live worker declares them (a name another live worker
    declares for a different task stops the start with ValidationError). Its logs mask every
    App's redaction keys, not only this one's."""
    tasks, declared = app.tasks.values(), list(app.declared_schedules.values())
    await db.run(catalog.register_all(tasks, app.redact_keys, name))
    subscriptions = [
        topics.Subscription(pattern, task.name) for task in tasks for pattern in task.topics
    ]
    if subscriptions:
        await db.run(topics.subscribe(subscriptions))
    if declared:
        await db.run(schedules.declare(declared, worker_id))
        await db.fetch("schedules_changed")
    return await db.run(catalog.stored_redact_keys()) | app.redact_keys


async def warn_unknown_queues(
    db: WorkerDb, queues: Sequence[str] | None, excluded: Sequence[str] | None
) -> None:
    named = list(queues or []) + list(excluded or [])
    if not named:
        return
    known = {row[0] for row in await db.fetch("queue_known", {"queues": named})}
    for queue in named:
        if queue not in known:
            log.warning("queue %r has no waiting jobs and no settings: is the name right?", queue)
