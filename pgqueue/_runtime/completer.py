"""Recording outcomes: the completer owns the outcome buffer and writes it in batches.

Successes ride along with the Producer's next claim when one is coming (one statement, one
commit for both: `job_claim.sql`); otherwise the same statement with a limit of 0 records
them alone. Failures go through `job_fail_many`. A write that fails keeps its batch for the
next try; at shutdown, claimed jobs without an outcome are released without spending an
attempt.

It also records when jobs claimed ahead into the buffer start (the claim recorded only the
start of those that took a free slot at once). A start goes with the job's outcome when the
job is over by the next write, which costs nothing extra; a job still running after
START_REPORT_DELAY has its start written on its own (`job_start_many`), so that it reads
`running` with its real start time and a crash from then on is charged to it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence

from .._core.claiming import ClaimedJob, Ledger
from .._core.outcome import SUSPENDED, Outcome
from .._db.claim import ClaimStatement, seconds_since
from .._db.errors import DatabaseError
from .._db.worker import WorkerDb
from ..types import JobState
from .events import Events, OutcomesWritten, Released
from .service import watch

log = logging.getLogger("pgqueue.worker")

#: Seconds a job that started from the buffer runs before its start is written on its own.
#: Shorter jobs have their start written with their outcome, at no cost; for this long, a
#: started job reads `claimed` and a kill -9 would not charge it (its row is then marked
#: maybe_started, so its next claim records the start at once: see job_rescue.sql).
START_REPORT_DELAY = 0.5

#: Longest that successes wait for the Producer's next claim to carry them, while one is
#: due soon (a backlog is being worked through): in a drain a claim follows within a few
#: milliseconds, and a batch written on its own costs a statement and a commit.
SUCCESS_HOLD = 0.050


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
        #: Whether a claim that takes the successes along is due, at once or within
        #: SUCCESS_HOLD (set by the worker to Producer.carries_successes): they wait for it.
        self.claim_due: Callable[[], bool] = lambda: False
        #: Told when the loop ends by an error (a bug): the worker stops (see `watch`).
        self.crashed: Callable[[str, BaseException], None] | None = None
        self._holding_since: float | None = None
        self._hold_timer: asyncio.TimerHandle | None = None
        self.closing = False
        self._task: asyncio.Task[None] | None = None
        #: Jobs that started from the buffer and whose start the database has not recorded
        #: yet: id -> start (`time.monotonic()`).
        self.began: dict[int, float] = {}
        self._report_timer: asyncio.TimerHandle | None = None
        self._report_due = False
        #: Outcome writes done so far (every kind): a burst worker compares it across a claim
        #: to tell whether a write landed while that claim was in the database.
        self.writes = 0

    # --- the buffer -----------------------------------------------------------------------

    def record(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        # A success while a claim is under way, or while a hold waits for one that is still
        # due, changes nothing the loop decides: the claim's end or the hold's timer wakes
        # it (waking it per job would re-check a buffer of hundreds of outcomes for each).
        quiet = outcome.state is JobState.COMPLETED and (
            self.claim_in_flight or (self._hold_timer is not None and self.claim_due())
        )
        if not quiet:
            self.ready.set()

    def started(self, job: ClaimedJob) -> None:
        """A job the claim did not record as started has just started."""
        self.began[job.id] = time.monotonic()
        if self._report_timer is None:
            self._report_timer = asyncio.get_running_loop().call_later(
                START_REPORT_DELAY, self._report_now
            )

    def _report_now(self) -> None:
        self._report_timer = None
        self._report_due = True
        self.ready.set()

    def take_successes(self) -> list[Outcome]:
        """Successes for the next claim to record (the claim restores them if it fails)."""
        if not self.outcomes:
            return []
        done = [o for o in self.outcomes if o.state is JobState.COMPLETED]
        if done:
            self.outcomes = [o for o in self.outcomes if o.state is not JobState.COMPLETED]
        self._end_hold()
        return done

    def _end_hold(self) -> None:
        self._holding_since = None
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None

    def _hold_over(self) -> None:
        self._hold_timer = None
        self.ready.set()

    def _holding(self) -> bool:
        """Whether successes wait a little longer for the claim that is due: from the first
        such wait, at most SUCCESS_HOLD. The hold ends when its timer fires (not by reading
        the clock: a loop runs a timer up to its clock resolution early, and a hold still
        'under way' then would never be woken again)."""
        if not self.outcomes or not self.claim_due():
            self._end_hold()
            return False
        if self._holding_since is None:
            loop = asyncio.get_running_loop()
            self._holding_since = loop.time()
            self._hold_timer = loop.call_later(SUCCESS_HOLD, self._hold_over)
            return True
        if self._hold_timer is not None:
            return True
        self._end_hold()
        return False

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
        self.writes += 1
        self.events.emit(OutcomesWritten(written, accepted))
        if len(accepted) < len(written):
            stale = [o.job.id for o in written if o.job.id not in accepted and not o.quiet]
            # The lease moved on (the job was rescued and claimed again): this run's outcome
            # must not overwrite the newer one.
            if stale:
                log.warning("ignored outcomes of jobs no longer leased to this worker: %s", stale)
        self.ledger.written(o.job.id for o in written)
        if self.began:  # their starts, if still pending, were written with them
            for o in written:
                self.began.pop(o.job.id, None)
        self._written()  # their slots are free now

    # --- the loop -------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="pgqueue-completer")
        watch(self._task, self.name, self.crashed)

    async def run(self) -> None:
        # Exits only between flushes (never cancelled mid-write), once the worker is closing.
        while not self.closing:
            await self.ready.wait()
            self.ready.clear()
            # A claim under way, or one due (Producer.carries_successes: at once, woken by
            # the same finished jobs, or within SUCCESS_HOLD), takes the successes along;
            # meanwhile only failures are worth a statement of their own.
            await asyncio.sleep(0)
            try:
                if self._report_due:
                    await self.report_starts()
                if all(o.state is JobState.COMPLETED for o in self.outcomes) and (
                    self.claim_in_flight or self._holding()
                ):
                    continue  # the claim wakes us again if anything is left when it returns
                self._end_hold()
                await self.flush(once=True)
            except DatabaseError:
                self.ready.set()  # the batch was kept; try again after the pause

    async def stop(self, timeout: float) -> None:
        """Let the loop finish the write it may be in the middle of, then end it."""
        self.closing = True
        self._end_hold()
        self.ready.set()
        task, self._task = self._task, None
        if self._report_timer is not None:
            self._report_timer.cancel()
            self._report_timer = None
        if task is None:
            return
        await asyncio.wait([task], timeout=timeout)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def flush(self, *, once: bool = False) -> None:
        """Write what is waiting; `once`: one batch only, and what arrived during its write
        is left to the loop, which decides again whether it waits for a claim."""
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
            if once:
                if self.outcomes:
                    self.ready.set()
                return

    async def write(self, batch: list[Outcome]) -> None:
        """Write one batch (a seam: tests hold writes back here)."""
        done = [o for o in batch if o.state is JobState.COMPLETED]
        failed = [o for o in batch if o.state is not JobState.COMPLETED]
        if failed:
            suspended = [o for o in failed if o.state in SUSPENDED]
            if suspended:
                failed = [o for o in failed if o.state not in SUSPENDED]
                await self.suspend(suspended)
        if done:
            # The claim statement with a limit of 0 records successes and claims nothing.
            result = await self.db.claim(self.statement, 0, done, began=self.began)
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
                    "began": seconds_since(failed, self.began),
                    "done_channel": self.db.queries.done_channel,
                },
            )
            self.accepted(failed, {r[0] for r in rows})

    async def suspend(self, batch: list[Outcome]) -> None:
        """Runs that stopped without ending their job: waiting for children, or asleep."""
        rows = await self.db.fetch(
            "job_suspend_many",
            {
                "ids": [o.job.id for o in batch],
                "leases": [o.job.lease for o in batch],
                "delays": [o.delay for o in batch],
            },
        )
        self.accepted(batch, {r[0] for r in rows})

    async def report_starts(self) -> None:
        """Write the starts of buffered jobs that have run for START_REPORT_DELAY. Those
        whose run is over are left to their outcome's write, which records the start too."""
        self._report_due = False
        now = time.monotonic()
        running, claimed = self.ledger.running, self.ledger.claimed
        due = [
            (claimed[job_id], now - t)
            for job_id, t in self.began.items()
            if job_id in running and now - t >= START_REPORT_DELAY * 0.9
        ]
        if due:
            try:
                await self.db.fetch(
                    "job_start_many",
                    {
                        "ids": [job.id for job, _ in due],
                        "leases": [job.lease for job, _ in due],
                        "agos": [ago for _, ago in due],
                    },
                )
            except DatabaseError:
                self._report_due = True
                await asyncio.sleep(0.5)
                raise
            for job, _ in due:
                self.began.pop(job.id, None)
        pending = [t for job_id, t in self.began.items() if job_id in running]
        if pending and self._report_timer is None and not self.closing:
            wait = max(0.0, min(pending) + START_REPORT_DELAY - time.monotonic())
            self._report_timer = asyncio.get_running_loop().call_later(wait, self._report_now)

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
        for job in jobs:
            self.began.pop(job.id, None)
        self.events.emit(Released(len(rows)))
        log.info("released %d unfinished jobs", len(rows))
