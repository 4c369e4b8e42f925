"""One shape for everything that runs in a worker's background.

A Service owns at most one asyncio Task: `start` spawns it (a no-op while it runs), `stop`
cancels and awaits it (safe if never started, safe twice). A PeriodicService runs one pass
per interval and survives database errors on its own, so a failing heartbeat no longer
skips the rescue pass. Time comes from an injectable Clock, so time-based services are
tested without sleeping. A LeaderGroup starts its services when the Elector reports
leadership and stops them the moment it is lost.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from .._db.errors import DatabaseError

log = logging.getLogger("pgqueue.worker")


class Clock:
    """Monotonic time and sleeping; tests substitute one that advances on demand."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def watch(
    task: asyncio.Task[None], name: str, report: Callable[[str, BaseException], None] | None
) -> None:
    """Report the error a background task ends with (not a cancellation): a task that dies
    alone would otherwise leave its worker claiming on without, say, anyone to write its
    outcomes. The worker attaches `report` (CrashWatch) before it starts any task."""
    if report is None:
        return

    def ended(done: asyncio.Task[None]) -> None:
        if not done.cancelled() and (error := done.exception()) is not None:
            report(name, error)

    task.add_done_callback(ended)


class CrashWatch:
    """The first error any of the worker's background tasks ended with: the worker stops
    on it (its jobs are written back or released as at any stop) and raises it once shut
    down, so that a supervisor sees a failed process instead of one stalled for good."""

    def __init__(self, stop: Callable[[], None]) -> None:
        self.error: BaseException | None = None
        self._stop = stop

    def __call__(self, name: str, error: BaseException) -> None:
        log.error("the worker's %s ended with an error: stopping", name, exc_info=error)
        if self.error is None:
            self.error = error
        self._stop()

    def attach(self, *watched: Any) -> None:
        """Services and the completer (anything with a `crashed` hook)."""
        for service in watched:
            service.crashed = self


class Service:
    name = "service"

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        #: Told when this service's task ends by an error (a bug: PeriodicService survives
        #: database errors), so that the worker stops instead of running on without it.
        self.crashed: Callable[[str, BaseException], None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        if not self.running:
            self._task = asyncio.create_task(self.run(), name=f"pgqueue-{self.name}")
            watch(self._task, self.name, self.crashed)

    async def run(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class PeriodicService(Service):
    """`run_once` every `interval` seconds; `immediate` runs the first pass at start."""

    interval: float = 1.0
    immediate = False
    #: Random delay before the first pass, so that workers started together spread out.
    stagger = 0.0

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.failures = 0

    async def run_once(self) -> None:
        raise NotImplementedError

    async def run(self) -> None:
        if self.stagger:
            await self.clock.sleep(random.uniform(0, self.stagger))
        first = self.immediate
        while True:
            if not first:
                await self.clock.sleep(self.interval)
            first = False
            try:
                await self.run_once()
                self.failures = 0
            except DatabaseError as exc:
                self.failures += 1
                level = logging.WARNING if self.failures == 1 else logging.DEBUG
                log.log(level, "%s failed, retrying in %g s: %s", self.name, self.interval, exc)


class LeaderGroup(Service):
    """Services that run in exactly one worker: started on election, stopped on loss."""

    name = "leader-group"

    def __init__(self, services: Sequence[Service]) -> None:
        super().__init__()
        self.services = list(services)
        self.active = False

    async def leadership(self, leader: bool) -> None:
        if leader and not self.active:
            self.active = True
            for service in self.services:
                await service.start()
        elif not leader and self.active:
            self.active = False
            await asyncio.gather(*(s.stop() for s in self.services))

    async def start(self) -> None:
        """Nothing runs until leadership arrives."""

    async def stop(self) -> None:
        await self.leadership(False)
