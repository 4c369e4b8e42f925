"""Recording outcomes: the completer owns the outcome buffer and writes it in batches.

Successes ride along with the Producer's next claim when one is coming (one statement, one
commit for both: `job_claim.sql`); otherwise the same statement with a limit of 0 records
them alone. Failures go through `job_fail_many`. A write that fails keeps its batch for the
next try; at shutdown, claimed jobs without an outcome are released without spending an
attempt.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence

from .._core.claiming import ClaimedJob, Ledger
from .._core.outcome import Outcome
from .._db.claim import ClaimStatement
from .._db.errors import DatabaseError
from .._db.worker import WorkerDb
from ..types import JobState
from .events import Events, OutcomesWritten, Released

log = logging.getLogger("pgqueue.worker")


class Completer:
    name = "completer"

    def __init__(
        self,
        db: WorkerDb,
        statement: ClaimStatement,
        ledger: Ledger,
        events: Events,
        *,
        written: Callable[[], None],
    ) -> None:
        self.db = db
        self.statement = statement
        self.ledger = ledger
        self.events = events
        self._written = written
        self.outcomes: list[Outcome] = []
        self.ready = asyncio.Event()
        #: A claim statement is under way; its successes ride along with it.
        self.claim_in_flight = False
        self.closing = False
        self._task: asyncio.Task[None] | None = None

    # --- the buffer -----------------------------------------------------------------------

    def record(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        self.ready.set()

    def take_successes(self) -> list[Outcome]:
        """Successes for the next claim to record (the claim restores them if it fails)."""
        if not self.outcomes:
            return []
        done = [o for o in self.outcomes if o.state is JobState.COMPLETED]
        if done:
            self.outcomes = [o for o in self.outcomes if o.state is not JobState.COMPLETED]
        return done

    def restore(self, done: Sequence[Outcome]) -> None:
        """Kept, whatever went wrong: written again by the next claim or flush (if the
        statement did commit, the lease guard makes the second write a no-op)."""
        self.outcomes[:0] = done

    def claim_finished(self) -> None:
        self.claim_in_flight = False
        if self.outcomes:
            self.ready.set()  # what arrived meanwhile is the completer's

    def accepted(self, written: Sequence[Outcome], accepted: set[int]) -> None:
        """Bookkeeping once outcomes are written: `accepted` are the ids the lease guard let
        through; the others belonged to runs whose job had moved on. One pass per batch:
        this runs for every batch of successes."""
        self.events.emit(OutcomesWritten(written, accepted))
        if len(accepted) < len(written):
            stale = [o.job.id for o in written if o.job.id not in accepted]
            # The lease moved on (the job was rescued and claimed again): this run's outcome
            # must not overwrite the newer one.
            log.warning("ignored outcomes of jobs no longer leased to this worker: %s", stale)
        self.ledger.written(o.job.id for o in written)
        self._written()  # their slots are free now

    # --- the loop -------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="pgqueue-completer")

    async def run(self) -> None:
        # Exits only between flushes (never cancelled mid-write), once the worker is closing.
        while not self.closing:
            await self.ready.wait()
            self.ready.clear()
            # A claim about to start (woken by the same finished jobs) takes the successes
            # along; while one is under way, only failures are worth a statement of their own.
            await asyncio.sleep(0)
            if self.claim_in_flight and all(o.state is JobState.COMPLETED for o in self.outcomes):
                continue  # the claim wakes us again if anything is left when it returns
            try:
                await self.flush()
            except DatabaseError:
                self.ready.set()  # the batch was kept; try again after the pause

    async def stop(self, timeout: float) -> None:
        """Let the loop finish the write it may be in the middle of, then end it."""
        self.closing = True
        self.ready.set()
        task, self._task = self._task, None
        if task is None:
            return
        await asyncio.wait([task], timeout=timeout)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def flush(self) -> None:
        while self.outcomes:
            batch, self.outcomes = self.outcomes, []
            try:
                await self.write(batch)
            except BaseException as exc:
                # Keep what was not written, whatever went wrong (a lost connection, a
                # cancellation): the next flush, or the shutdown flush, writes it again.
                self.outcomes[:0] = [o for o in batch if o.job.id in self.ledger.claimed]
                if isinstance(exc, DatabaseError):
                    log.warning("could not record %d outcomes, retrying: %s", len(batch), exc)
                    await asyncio.sleep(0.5)
                raise

    async def write(self, batch: list[Outcome]) -> None:
        """Write one batch (a seam: tests hold writes back here)."""
        done = [o for o in batch if o.state is JobState.COMPLETED]
        failed = [o for o in batch if o.state is not JobState.COMPLETED]
        if done:
            # The claim statement with a limit of 0 records successes and claims nothing.
            result = await self.db.claim(self.statement, 0, done)
            self.accepted(done, result.accepted)
        if failed:
            rows = await self.db.fetch(
                "job_fail_many",
                {
                    "ids": [o.job.id for o in failed],
                    "leases": [o.job.lease for o in failed],
                    "states": [o.state.value for o in failed],
                    "delays": [o.delay for o in failed],
                    "errors": [json.dumps(o.error) for o in failed],
                    "done_channel": self.db.queries.done_channel,
                },
            )
            self.accepted(failed, {r[0] for r in rows})

    # --- shutdown -------------------------------------------------------------------------

    async def flush_all(self) -> None:
        """The final flush; jobs claimed but never recorded (cancelled at shutdown, or never
        started) go back without using up an attempt."""
        recorded = {o.job.id for o in self.outcomes}
        unfinished = self.ledger.unrecorded(recorded)
        for attempt in range(5):
            try:
                await self.flush()
                if unfinished:
                    await self.release(unfinished)
                    unfinished = []
                return
            except DatabaseError as exc:
                log.warning("could not record outcomes at shutdown (try %d): %s", attempt + 1, exc)
                await asyncio.sleep(0.5 * (attempt + 1))

    async def release(self, jobs: list[ClaimedJob]) -> None:
        rows = await self.db.fetch(
            "job_release_many",
            {"ids": [j.id for j in jobs], "leases": [j.lease for j in jobs]},
        )
        self.ledger.written(j.id for j in jobs)
        self.events.emit(Released(len(rows)))
        log.info("released %d unfinished jobs", len(rows))
