"""The Elector: leadership as a row with an expiry (works through PgBouncer), renewed every
beat; its transitions start and stop the leader-only maintenance group."""

from __future__ import annotations

import logging
from uuid import UUID

from .._db.worker import WorkerDb
from .service import Clock, LeaderGroup, PeriodicService

log = logging.getLogger("pgqueue.worker")


class Elector(PeriodicService):
    name = "elector"

    def __init__(
        self,
        db: WorkerDb,
        clock: Clock,
        group: LeaderGroup,
        *,
        worker_id: UUID,
        interval: float,
        ttl: float,
    ) -> None:
        super().__init__(clock)
        self.db = db
        self.group = group
        self.worker_id = worker_id
        self.interval = interval
        self.ttl = ttl
        self.is_leader = False

    async def run_once(self) -> None:
        try:
            elected = bool(
                await self.db.fetch("leader_elect", {"worker_id": self.worker_id, "ttl": self.ttl})
            )
        except BaseException:
            # Unsure of leadership: stop leading rather than risk two leaders.
            await self._set(False)
            raise
        await self._set(elected)

    async def _set(self, elected: bool) -> None:
        if elected != self.is_leader:
            log.info(
                "worker %s %s maintenance leader",
                self.worker_id,
                "is now" if elected else "is no longer",
            )
        self.is_leader = elected
        await self.group.leadership(elected)

    async def stop(self) -> None:
        await super().stop()
        await self.group.leadership(False)

    async def resign(self) -> None:
        if self.is_leader:
            await self.db.fetch("leader_resign", {"worker_id": self.worker_id})
            self.is_leader = False
