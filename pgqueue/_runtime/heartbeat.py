"""Every worker's own periodic duties: its heartbeat, operator cancellations, and (with a
metrics port) sampling queue depths for Prometheus."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from .._core import admin, flow
from .._db.worker import WorkerDb
from ..types import QueueLimit, QueueStats
from .executor import Executor
from .service import Clock, PeriodicService

log = logging.getLogger("pgqueue.worker")


class Heartbeat(PeriodicService):
    """Keeps the worker's row fresh: a worker silent past its `heartbeat_timeout` is
    presumed dead and its jobs are rescued."""

    name = "heartbeat"

    def __init__(
        self,
        db: WorkerDb,
        clock: Clock,
        *,
        worker_id: UUID,
        queues: Sequence[str] | None,
        concurrency: int,
        interval: float,
        timeout: float,
        exclude_queues: Sequence[str] | None = None,
    ) -> None:
        super().__init__(clock)
        self.db = db
        self.worker_id = worker_id
        self.interval = interval
        self._register: dict[str, Any] = {
            "id": worker_id,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "queues": list(queues) if queues else None,
            "concurrency": concurrency,
            "heartbeat_timeout": timeout,
            "exclude_queues": list(exclude_queues) if exclude_queues else None,
        }

    async def register(self) -> None:
        await self.db.fetch("worker_register", self._register)

    async def run_once(self) -> None:
        if not await self.db.fetch("worker_heartbeat", {"id": self.worker_id}):
            log.warning("worker row was missing (cleaned up while we were cut off): re-registering")
            await self.register()

    async def deregister(self) -> None:
        await self.db.fetch("worker_stop", {"id": self.worker_id})


class CancelWatcher(PeriodicService):
    """Cancels the runs an operator asked to stop; skips the query while nothing runs."""

    name = "cancel-watcher"

    def __init__(
        self, db: WorkerDb, clock: Clock, executor: Executor, *, worker_id: UUID, interval: float
    ) -> None:
        super().__init__(clock)
        self.db = db
        self.executor = executor
        self.worker_id = worker_id
        self.interval = interval

    async def run_once(self) -> None:
        if not self.executor.running:
            return
        for (job_id,) in await self.db.fetch("job_cancel_requested", {"worker_id": self.worker_id}):
            self.executor.cancel(job_id)


class QueueSampler(PeriodicService):
    """Queue depths and lag for the metrics endpoint; with `publish_flow`, the limits with
    their use (queue_limits) and the enqueues refused with QueueFull."""

    name = "queue-sampler"

    def __init__(
        self,
        db: WorkerDb,
        clock: Clock,
        publish: Callable[[list[QueueStats]], None],
        *,
        interval: float,
        publish_flow: Callable[[list[QueueLimit], int], None] | None = None,
    ) -> None:
        super().__init__(clock)
        self.db = db
        self.publish = publish
        self.publish_flow = publish_flow
        self.interval = interval

    async def run_once(self) -> None:
        self.publish(await self.db.run(admin.queue_stats()))
        if self.publish_flow is not None:
            limits = await self.db.run(flow.limits())
            self.publish_flow(limits, await self.db.run(flow.rejected()))
