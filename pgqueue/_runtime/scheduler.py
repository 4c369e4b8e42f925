"""The Scheduler: the leader's service that fires schedule slots.

One pass reads the database's clock and every schedule that may fire (not paused, declared
by a live worker), asks the pure cron arithmetic what is due (`_core/cron.py`), and fires
it through `fire_schedule`, which makes each slot's job and advances `last_slot` in one
transaction under the schedule's row lock. Then it sleeps until the next slot of any
schedule, not in a poll loop: it is woken early when schedules change (a worker declared
some, one was paused or resumed: the `#schedules` notification), and re-reads them at least
every MAX_SLEEP seconds as the safety net for a lost notification or a worker that cannot
LISTEN.

Correctness does not rest on there being one leader: two overlapping leaders fire the
same slot once (the row lock and the `last_slot` test), so a leadership change can delay a
slot by the election's timeout, never duplicate or lose it (with `catch_up="latest"` or
`"all"`).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from .._core import schedules
from .._db.errors import DatabaseError
from .._db.worker import WorkerDb
from .service import Clock, Service

log = logging.getLogger("pgqueue.worker")

#: Longest sleep between passes (seconds) when no slot is due sooner.
MAX_SLEEP = 300.0
#: Sleep past the slot a little, so the database's clock has reached it when we look.
MARGIN = 0.005
#: After a failed pass (database unreachable), wait this long before the next.
RETRY_AFTER = 2.0


class Scheduler(Service):
    name = "scheduler"

    def __init__(self, db: WorkerDb, clock: Clock) -> None:
        super().__init__()
        self.db = db
        self.clock = clock
        self._changed = asyncio.Event()
        self.failures = 0
        #: (schedule, slot, job id) of every job this service made, newest last (tests and
        #: logs; bounded).
        self.fired: list[tuple[str, datetime, int]] = []

    def changed(self) -> None:
        """Schedules changed elsewhere: run a pass now (a no-op while not leading)."""
        self._changed.set()

    async def run_once(self) -> float:
        """One pass; returns the seconds until the next slot (at most MAX_SLEEP)."""
        now, active = await self.db.run(schedules.active())
        upcoming: list[datetime] = []
        for schedule in active:
            if schedule.cron is None:
                log.warning("schedule %r: cannot evaluate its expression", schedule.name)
                continue
            plan = schedules.pass_due(schedule, now)
            if plan is not None:
                made = await self.db.run(schedules.fire(schedule.name, plan))
                for slot, job_id in made:
                    log.info("schedule %r: slot %s -> job %d", schedule.name, slot, job_id)
                    self.fired.append((schedule.name, slot, job_id))
                if plan.skipped:
                    log.info(
                        "schedule %r: skipped missed slots (catch_up=%r)",
                        schedule.name,
                        schedule.catch_up,
                    )
                nxt = plan.next_run_at
            else:
                nxt = schedule.next_run_at
            if nxt is not None:
                upcoming.append(nxt)
        del self.fired[:-1000]
        if not upcoming:
            return MAX_SLEEP
        return min(MAX_SLEEP, max(0.0, (min(upcoming) - now).total_seconds()) + MARGIN)

    async def run(self) -> None:
        while True:
            self._changed.clear()
            try:
                delay = await self.run_once()
                self.failures = 0
            except DatabaseError as exc:
                self.failures += 1
                level = logging.WARNING if self.failures == 1 else logging.DEBUG
                log.log(level, "scheduler pass failed, retrying in %g s: %s", RETRY_AFTER, exc)
                delay = RETRY_AFTER
            await self._sleep(delay)

    async def _sleep(self, seconds: float) -> None:
        """The clock's sleep, cut short by a change."""
        if self._changed.is_set():
            return
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        waker = asyncio.ensure_future(self._changed.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()
            await asyncio.gather(sleeper, waker, return_exceptions=True)
