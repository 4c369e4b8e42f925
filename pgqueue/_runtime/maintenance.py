"""Leader-only maintenance: rescue the jobs of dead workers, prune history, keep the jobs
table's planner statistics fresh. Each is its own PeriodicService in the LeaderGroup, so
one failing never skips another, and all stop the moment leadership is lost."""

from __future__ import annotations

import logging

from .._core import admin
from .._db.errors import PermissionDenied
from .._db.worker import WorkerDb
from .events import Events, Expired, Pruned, Rescued
from .service import Clock, PeriodicService

log = logging.getLogger("pgqueue.worker")

#: Rows per prune statement, and statements per pass: history never grows without bound,
#: and no pass holds a long lock.
PRUNE_BATCH = 1000
PRUNE_BATCHES = 10

#: Seconds between the leader's flow-control passes (expiry, depth estimate): an expired
#: job is cancelled within about this long, and the estimate is never older than this.
FLOW_INTERVAL = 1.0


class Rescuer(PeriodicService):
    """Jobs `running` under a worker silent past its heartbeat timeout run again; after
    `max_rescues` a job is failed as a poison job (job_rescue.sql)."""

    name = "rescuer"
    immediate = True

    def __init__(
        self, db: WorkerDb, clock: Clock, events: Events, *, interval: float, max_rescues: int
    ) -> None:
        super().__init__(clock)
        self.db = db
        self.events = events
        self.interval = interval
        self.max_rescues = max_rescues

    async def run_once(self) -> None:
        rows = await self.db.fetch("job_rescue", {"max_rescues": self.max_rescues})
        if rows:
            self.events.emit(Rescued(rows))
            log.warning(
                "rescued %d jobs of dead workers: %s", len(rows), [(r[0], r[1]) for r in rows]
            )


class Analyzer(PeriodicService):
    """ANALYZE the jobs table when its statistics are missing or stale.

    Autovacuum does this where it runs; where it is off (or a bulk load outran it), the
    claim would be planned on no statistics and sort the whole backlog on every call.
    Needs the table's owner; without the privilege it says so once and gives up.
    """

    name = "analyzer"
    # Not at election: every worker already ran one pass at start.

    def __init__(self, db: WorkerDb, clock: Clock, *, interval: float) -> None:
        super().__init__(clock)
        self.db = db
        self.interval = interval
        self.denied = False

    async def run_once(self) -> None:
        if self.denied:
            return
        table = self.db.queries.jobs_table
        rows = await self.db.fetch("jobs_analyze_needed", {"table": table})
        if not rows or not rows[0][0]:
            return
        try:
            await self.db.analyze_jobs()
            log.info("analyzed %s: its planner statistics were missing or stale", table)
        except PermissionDenied as exc:
            self.denied = True
            log.warning("cannot ANALYZE %s (%s); make sure autovacuum runs", table, exc)


class Pruner(PeriodicService):
    """Retention: finished jobs past their `retention` are deleted, a few small batches per
    interval."""

    name = "pruner"
    immediate = True

    def __init__(self, db: WorkerDb, clock: Clock, events: Events, *, interval: float) -> None:
        super().__init__(clock)
        self.db = db
        self.events = events
        self.interval = interval

    async def run_once(self) -> None:
        deleted = await self.db.run(admin.prune(None, PRUNE_BATCH, max_batches=PRUNE_BATCHES))
        self.events.emit(Pruned(deleted))


class FlowKeeper(PeriodicService):
    """Flow control's leader duties, about once a second (flow_maintain.sql): jobs past their
    `expires_at` are cancelled as expired, queues with `max_depth` get a fresh depth
    estimate (what a far-from-full enqueue trusts), idle rate logs and freed slots go. While
    nothing needs it (no max_depth, no job that can expire, no slots or logs), it comes back
    only every `idle_interval`: a database without flow control pays one query per that."""

    name = "flow-keeper"
    immediate = True

    def __init__(
        self, db: WorkerDb, clock: Clock, events: Events, *, interval: float, idle_interval: float
    ) -> None:
        super().__init__(clock)
        self.db = db
        self.events = events
        self.busy_interval = interval
        self.idle_interval = max(interval, idle_interval)
        self.interval = interval

    async def run_once(self) -> None:
        rows = await self.db.fetch("flow_maintain")
        self.interval = self.busy_interval if rows else self.idle_interval
        expired = [r[0] for r in rows if r[0] is not None]
        if expired:
            self.events.emit(Expired(len(expired)))
            log.info("cancelled %d expired jobs: %s", len(expired), expired[:20])
