"""The Producer: claims due jobs into the ledger's buffer and starts them on free slots.

It claims when there is room and the buffer is low, and something may be claimable (a
NOTIFY, a freed slot after a full claim, the poll timer). Successes waiting in the completer
ride along with each claim. An idle worker probes for rescued (suspect) jobs first and runs
one alone. After anything that may have lost a claim's reply (an error, a new connection),
it first gives back rows claimed under its id that it does not know of.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .._core.claiming import (
    SUSPECT_PROBE_INTERVAL,
    ClaimCursor,
    ClaimedJob,
    Ledger,
    last_in_claim_order,
)
from .._core.outcome import Outcome
from .._db.claim import ClaimStatement
from .._db.errors import DatabaseError
from .._db.worker import WorkerDb
from .completer import Completer
from .events import Claimed, Events, Released
from .executor import Executor
from .service import Clock
from .settings import WorkerSettings

log = logging.getLogger("pgqueue.worker")


class Wakeup:
    """'Something may be claimable now': one level-triggered event plus whether a claim
    should be tried even after a short one (a NOTIFY that arrived during a claim)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.maybe_more = True
        self.nudged = False

    def nudge(self) -> None:
        self.maybe_more = True
        self.nudged = True  # survives a claim that was already under way
        self.event.set()

    def wake(self) -> None:
        self.event.set()

    async def sleep(self, seconds: float) -> bool:
        """Sleep until woken or `seconds` pass; True if the timer fired."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.event.wait(), seconds)
        fired = not self.event.is_set()
        self.event.clear()
        return fired


class Producer:
    name = "producer"

    def __init__(
        self,
        db: WorkerDb,
        statement: ClaimStatement,
        ledger: Ledger,
        executor: Executor,
        completer: Completer,
        events: Events,
        settings: WorkerSettings,
        clock: Clock,
    ) -> None:
        self.db = db
        self.statement = statement
        self.ledger = ledger
        self.executor = executor
        self.completer = completer
        self.events = events
        self.settings = settings
        self.clock = clock
        self.wakeup = Wakeup()
        self.cursor = ClaimCursor()
        self.stopping = False
        #: A claim may have committed with its reply lost, or the server may have lost
        #: recent commits: check for rows claimed under our id that we do not know of.
        self.orphans_possible = False
        self.quarantined: int | None = None  # a suspect job running alone
        self.recorded = False  # the last claim recorded outcomes too
        self._next_suspect_probe = 0.0

    def nudge(self) -> None:
        """Something may be claimable now (a NOTIFY, a reconnect): claim without waiting."""
        self.wakeup.nudge()

    def stop(self) -> None:
        self.stopping = True
        self.wakeup.wake()

    def slot_freed(self, job_id: int) -> None:
        if self.quarantined == job_id:
            self.quarantined = None
        self.wakeup.wake()

    # --- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Until stopped (or, for a burst worker, until nothing is left to do)."""
        ledger, wakeup, settings = self.ledger, self.wakeup, self.settings
        while not self.stopping:
            self.start_buffered()
            idle = ledger.idle()
            room = ledger.room()
            # A burst worker whose jobs have all finished asks once more before it exits.
            want = wakeup.maybe_more or (settings.burst and idle)
            if room > 0 and ledger.low() and want and self.quarantined is None:
                wakeup.nudged = False
                try:
                    jobs = await self._claim_for(room, idle)
                except DatabaseError as exc:
                    # The claim may have committed with its reply lost: check for orphans
                    # once the database answers again.
                    log.warning("claim failed, trying again shortly: %s", exc)
                    self.orphans_possible = True
                    await wakeup.sleep(min(settings.poll_interval, 0.5))
                    wakeup.maybe_more = True
                    continue
                # Fewer than asked means the queue is dry for now: wait for a NOTIFY or the
                # next poll rather than re-querying each time a slot frees up.
                wakeup.maybe_more = (
                    len(jobs) == room or self.quarantined is not None or wakeup.nudged
                )
                ledger.add(jobs)
                self.start_buffered()
                # Only once every outcome is written, and the last claim recorded none: an
                # outcome may make more work claimable (a workflow job whose last dependency
                # it settles), which a claim in the same statement cannot see yet.
                if (
                    not jobs
                    and settings.burst
                    and idle
                    and not self.recorded
                    and not ledger.claimed
                ):
                    log.info("burst: nothing left to do")
                    return
                if wakeup.maybe_more and ledger.low():
                    continue  # the next turn claims again, or sleeps if there is no room
            if await wakeup.sleep(settings.poll_interval) and not self.stopping:
                wakeup.maybe_more = True  # poll timer fired

    async def _claim_for(self, room: int, idle: bool) -> list[ClaimedJob]:
        if self.orphans_possible:
            await self.release_orphans()
        if idle and self.clock.now() >= self._next_suspect_probe:
            jobs = await self.claim(1, suspects=True)
            if jobs:
                self.quarantined = jobs[0].id
                log.info("running rescued job %d alone", jobs[0].id)
                return jobs
            # Rescued jobs are rare: an idle worker woken for a new job should not pay a
            # round trip for them on every wake-up.
            self._next_suspect_probe = self.clock.now() + SUSPECT_PROBE_INTERVAL
        return await self.claim(room)

    def start_buffered(self) -> None:
        ledger = self.ledger
        while ledger.can_start():
            if self.quarantined is not None and ledger.running:
                return  # a suspect runs alone
            self.executor.start(ledger.start_next())

    # --- claiming -------------------------------------------------------------------------

    async def claim(self, limit: int, *, suspects: bool = False) -> list[ClaimedJob]:
        """Claim up to `limit` jobs (a seam: tests hold claims back here). Successes waiting
        for their write ride along with an ordinary claim: one round trip and one commit."""
        completer = self.completer
        done = [] if suspects else completer.take_successes()
        self.recorded = bool(done)
        # The rows that will take a free slot as soon as the claim returns: the claim
        # records their start; the rest wait in the buffer, claimed but not started.
        start = self.ledger.startable()
        completer.claim_in_flight = True
        try:
            if suspects or not self.statement.continues or not self.cursor.fresh(self.clock.now()):
                return await self._statement(limit, done, start, suspects=suspects)
            jobs = await self._statement(limit, done, start, after=True)
            if len(jobs) < limit:
                # The continuation ran dry, or what is left sorts before it: from the front.
                # Those rows sort before the continuation's, so they start first (and may
                # push a continuation row recorded as started back into the buffer: rare,
                # and it only makes that row's start look earlier than it was).
                self.cursor.reset()
                done = []
                jobs = await self._statement(limit - len(jobs), [], start) + jobs
            return jobs
        except BaseException:
            completer.restore(done)
            raise
        finally:
            completer.claim_finished()

    async def _statement(
        self,
        limit: int,
        done: list[Outcome],
        start: int,
        *,
        suspects: bool = False,
        after: bool = False,
    ) -> list[ClaimedJob]:
        position = self.cursor.position if after else None
        result = await self.db.claim(
            self.statement,
            limit,
            done,
            start=start,
            began=self.completer.began,
            suspects=suspects,
            after=position,
        )
        if not suspects and self.statement.continues:
            self.cursor.advance(
                last_in_claim_order(result.positions),
                restarted=position is None,
                now=self.clock.now(),
            )
        if done:
            self.completer.accepted(done, result.accepted)
        self.events.emit(Claimed(len(result.jobs)))
        return result.jobs

    async def release_orphans(self) -> None:
        # Cleared first: a connection opened while this runs sets it again.
        self.orphans_possible = False
        rows = await self.db.fetch(
            "job_release_orphans",
            {"worker_id": self.statement.worker_id, "known": list(self.ledger.claimed)},
        )
        if rows:
            self.events.emit(Released(len(rows)))
            log.warning(
                "released %d jobs claimed by a lost reply: %s", len(rows), [r[0] for r in rows]
            )
