"""The Notifier: one LISTEN connection per worker process, turning NOTIFY into a claim.

Every `listener_check_interval` seconds the worker notifies itself through the pool; if that
ping has not come back by the next check, the connection is presumed half-open and rebuilt.
After every (re)LISTEN the Producer is nudged, because anything enqueued meanwhile was
announced to nobody.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from .._core.schedules import SCHEDULES_CHANGED
from .._db.errors import ConnectionFailed, DatabaseError
from .._db.worker import ListenConnection, WorkerDb
from .events import Events, ListenerRebuilt
from .service import Service

log = logging.getLogger("pgqueue.worker")


class Notifier(Service):
    name = "listener"

    def __init__(
        self,
        db: WorkerDb,
        queues: Sequence[str] | None,
        events: Events,
        *,
        nudge: Callable[[], None],
        check_interval: float,
        ping: str,
        excluded: Sequence[str] | None = None,
        schedules_changed: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self.db = db
        self.queues = set(queues) if queues else None
        self.excluded = set(excluded) if excluded else set()
        self.events = events
        self.nudge = nudge
        self.check_interval = check_interval
        self.ping = ping  # '#' cannot start a queue name
        #: Called on the `#schedules` notification (the leader's Scheduler re-reads).
        self.schedules_changed = schedules_changed

    def wants(self, queue: str) -> bool:
        """Whether a wake-up for this queue concerns this worker (its queues, or every queue
        but the excluded ones): others would cost an empty claim each."""
        if self.queues is not None:
            return queue in self.queues
        return queue not in self.excluded

    async def run(self) -> None:
        backoff = 0.1
        while True:
            try:
                async with self.db.listener(self.db.queries.jobs_channel) as conn:
                    backoff = 0.1
                    self.nudge()
                    await self.receive(conn)
                self.events.emit(ListenerRebuilt("silent"))
                log.warning("listener went silent; rebuilding it")
            except DatabaseError as exc:
                self.events.emit(ListenerRebuilt("lost"))
                log.warning("listener lost its connection, reconnecting: %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def receive(self, conn: ListenConnection[Any]) -> None:
        """Deliver notifications until the self-ping goes unanswered (a seam for tests)."""
        ping_pending = False
        while True:
            async for payload in self.db.notifications(conn, self.check_interval):
                if payload == self.ping:
                    ping_pending = False
                elif payload == SCHEDULES_CHANGED:
                    if self.schedules_changed is not None:
                        self.schedules_changed()
                elif (
                    payload in self.queues
                    if self.queues is not None
                    else payload not in self.excluded
                ):
                    self.nudge()
            if ping_pending:
                return
            try:
                await self.db.fetch("listener_ping", {"ping": self.ping})
                ping_pending = True
            except ConnectionFailed as exc:
                log.warning("could not send the listener ping: %s", exc)
