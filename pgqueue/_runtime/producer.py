"""The Producer: claims due jobs into the ledger's buffer and starts them on free slots.

It claims when there is room and the buffer is low, and something may be claimable (a
NOTIFY, a freed slot after a full claim, the poll timer). Successes waiting in the completer
ride along with each claim. An idle worker probes for rescued (suspect) jobs first and runs
one alone. After anything that may have lost a claim's reply (an error, a new connection),
it first gives back rows claimed under its id that it does not know of.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from .._core.claiming import (
    SUSPECT_PROBE_INTERVAL,
    ClaimCursor,
    ClaimedJob,
    Cursor,
    Ledger,
    Pace,
    last_in_claim_order,
)
from .._core.outcome import Outcome
from .._db.claim import ClaimStatement, Route, route
from .._db.errors import DatabaseError
from .._db.worker import WorkerDb
from .completer import Completer
from .events import Claimed, Events, Released
from .executor import Executor
from .service import Clock
from .settings import WorkerSettings

log = logging.getLogger("pgqueue.worker")

#: Seconds between a claiming worker's looks at which queues have flow-control settings
#: (the limits themselves are read by every claim); a NOTIFY wake-up looks sooner.
FLOW_CHECK_INTERVAL = 1.0
FLOW_CHECK_AFTER_NUDGE = 0.1
#: Seconds a worker that claims only for free slots (every queue it serves has a counted
#: limit) may wait, once a slot frees, for half its slots to free before it claims: jobs
#: ending together then refill in one claim, where the first one to end used to take a
#: claim of its own (a drain of no-op jobs averaged half the slots per claim). Short next
#: to any job that does work, so a slot waits at most this long for a start.
LIMITED_BATCH_WAIT = 0.002


def _in_claim_order(jobs: list[ClaimedJob], positions: list[Cursor]) -> list[ClaimedJob]:
    """Jobs of two claims merged in claim order: priority DESC, run_at, id."""
    ranked = sorted(zip(positions, jobs, strict=True), key=lambda pj: (-pj[0][0], pj[0][1:]))
    return [job for _, job in ranked]


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
        """Sleep until woken or `seconds` pass; True if the timer fired. A timer handle
        sets the event, where `wait_for` made a Task and a timer for every wait (the
        producer waits between claims, many times a second under load)."""
        event = self.event
        fired = False
        if not event.is_set():

            def timeout() -> None:
                nonlocal fired
                fired = True
                event.set()

            timer = asyncio.get_running_loop().call_later(seconds, timeout)
            try:
                await event.wait()
            finally:
                timer.cancel()
        event.clear()
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
        self.pace = Pace()  # sizes an adaptive prefetch (Ledger.tune)
        self.stopping = False
        #: A claim may have committed with its reply lost, or the server may have lost
        #: recent commits: check for rows claimed under our id that we do not know of.
        self.orphans_possible = False
        self.quarantined: int | None = None  # a suspect job running alone
        self.recorded = False  # the last claim recorded outcomes too
        self._next_suspect_probe = 0.0
        #: Flow control: the queues with settings (claimed by claim_limited), the route
        #: that splits this worker's queues between the two claims, when it was read, and
        #: what the last limited claim said (seconds until a limit permits a start; whether
        #: it got all it asked for).
        self.limited: frozenset[str] = frozenset()
        #: Of those, the queues with a concurrency or rate limit (not only `fair`).
        self.counted: frozenset[str] = frozenset()
        self.route = Route(statement, None)
        self._flow_checked = -FLOW_CHECK_INTERVAL
        self._flow_nudged = False
        self.flow_wait: float | None = None
        self.flow_more = False
        #: Until when the plain claim of a worker that also serves limited queues is not
        #: repeated with every limited claim, because it came back short: a wake-up, the
        #: poll timer, or at most a poll interval (a second at most) ends it (walking past a
        #: limited queue's backlog in the claim index is not free).
        self.plain_dry_until = 0.0
        #: When a free slot began waiting for a limited-only claim to gather more (None:
        #: none waits).
        self._short_since: float | None = None

    def nudge(self) -> None:
        """Something may be claimable now (a NOTIFY, a reconnect): claim without waiting."""
        self._flow_nudged = True  # a queue's settings may have changed (configure_queue)
        self.plain_dry_until = 0.0
        self.wakeup.nudge()

    def stop(self) -> None:
        self.stopping = True
        self.wakeup.wake()

    def slot_freed(self, job_id: int) -> None:
        if self.quarantined == job_id:
            self.quarantined = None
        if self.route.limited is not None:
            # A limited claim asks for free slots only: a freed one is worth a claim.
            self.wakeup.maybe_more = True
        if not self.stopping:
            # The next buffered job takes the slot now, also while a claim is in flight:
            # the loop below is suspended in that claim, and starting only when it returns
            # left every slot idle for the whole round trip (a drain ran no job at all
            # while its claims were out, two thirds of the time).
            self.start_buffered()
        self.wakeup.wake()

    def room(self) -> int:
        """What a claim may ask for: slots plus prefetch; only the free slots when every
        queue this worker serves is limited (a limited job is claimed only to start)."""
        room = self.ledger.room()
        if self.route.plain is None and not self._prefetch_limited():
            ledger = self.ledger
            room = min(room, ledger.concurrency - len(ledger.running) - len(ledger.buffer))
        return room

    def carries_successes(self) -> bool:
        """Whether a claim that takes the completer's successes along is due, at once or
        within SUCCESS_HOLD, so they wait for it rather than take a statement and a commit
        of their own. Two workers have one:
        - one that claims for free slots only (every queue it serves has a counted limit),
          with room to claim now: writing the successes is what frees those slots in the
          database, so written on their own first, the claim would find them still held;
        - a plain worker working through a backlog (its last claim came back full, jobs
          wait in its buffer), with its unwritten outcomes far from the bound that would
          hold back a start.
        Never while stopping or while a suspect runs alone (no claim follows)."""
        if self.stopping or self.quarantined is not None:
            return False
        ledger, route = self.ledger, self.route
        if route.limited is None:
            return (
                self.wakeup.maybe_more
                and bool(ledger.buffer)
                and len(ledger.claimed) - len(ledger.buffer) + ledger.concurrency
                <= ledger.unwritten_cap
            )
        return (
            route.plain is None
            and not self._prefetch_limited()
            and ledger.low()
            and (self.room() > 0)
        )

    def _batch_wait(self, room: int) -> float:
        """Seconds to hold back a claim for `room` free slots so that it gathers more (see
        LIMITED_BATCH_WAIT); 0: claim now. Only a worker claiming for free slots alone, with
        fewer than half free and jobs still running (one of them may end soon)."""
        ledger = self.ledger
        if (
            self.route.plain is not None
            or self._prefetch_limited()
            or not ledger.running
            or 2 * room >= ledger.concurrency
        ):
            self._short_since = None
            return 0.0
        now = self.clock.now()
        if self._short_since is None:
            self._short_since = now
        return max(0.0, self._short_since + LIMITED_BATCH_WAIT - now)

    def _prefetch_limited(self) -> bool:
        """Whether the limited claim may claim ahead of free slots: only when no queue it
        serves has a concurrency or rate limit (a fair queue alone is not counted)."""
        limited = self.route.limited
        return limited is not None and not any(q in self.counted for q in limited.queues)

    # --- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Until stopped (or, for a burst worker, until nothing is left to do)."""
        ledger, wakeup, settings = self.ledger, self.wakeup, self.settings
        while not self.stopping:
            self.start_buffered()
            idle = ledger.idle()
            room = self.room()
            # A burst worker whose jobs have all finished asks once more before it exits.
            want = wakeup.maybe_more or (settings.burst and idle)
            if room > 0 and ledger.low() and want and self.quarantined is None:
                hold = self._batch_wait(room)
                if hold > 0:
                    await wakeup.sleep(hold)  # a slot freed meanwhile wakes it sooner
                    continue
                self._short_since = None
                wakeup.nudged = False
                sent = self.clock.now()
                writes = self.completer.writes
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
                    len(jobs) == room
                    or self.quarantined is not None
                    or wakeup.nudged
                    or self.flow_more
                )
                ledger.add(jobs)
                self.start_buffered()
                if ledger.adaptive:
                    now = self.clock.now()
                    self.pace.claimed(now, ledger.starts, now - sent)
                    ledger.tune(self.pace.rate, self.pace.latency)
                # Only once every outcome is written, and neither the last claim nor a write
                # of the completer's while it ran recorded any: an outcome may make more
                # work claimable (a workflow job whose last dependency it settles), which a
                # claim in the same statement, or one whose snapshot came before the write,
                # cannot see. And a limit holding jobs back (a wait hint) is not "nothing
                # left to do".
                if (
                    not jobs
                    and settings.burst
                    and idle
                    and not self.recorded
                    and not ledger.claimed
                    and self.completer.writes == writes
                    and self.flow_wait is None
                ):
                    log.info("burst: nothing left to do")
                    return
                if wakeup.maybe_more and ledger.low():
                    continue  # the next turn claims again, or sleeps if there is no room
            if await wakeup.sleep(self._sleep_seconds()) and not self.stopping:
                wakeup.maybe_more = True  # poll timer fired
                self.plain_dry_until = 0.0

    def _sleep_seconds(self) -> float:
        """The poll interval, or less when a limit said when it permits the next start: a
        held-back worker sleeps until then, never polling in a loop."""
        wait = self.flow_wait
        if wait is None:
            return self.settings.poll_interval
        return min(self.settings.poll_interval, max(wait, 0.0))

    async def _claim_for(self, room: int, idle: bool) -> list[ClaimedJob]:
        if self.orphans_possible:
            await self.release_orphans()
        await self.refresh_flow()
        # A suspect runs alone, and only once every outcome of this worker is written: a
        # finished job whose outcome still waits would share the suspect's crash and be
        # charged a rescue it did not cause (an innocent neighbour of a poison job in claim
        # order was failed as poison that way).
        if idle and not self.ledger.claimed and self.clock.now() >= self._next_suspect_probe:
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

    async def refresh_flow(self) -> None:
        """Which queues have flow-control settings, read about once a second (sooner after a
        NOTIFY: configure_queue sends one); a change re-routes this worker's claims."""
        now = self.clock.now()
        due = now >= self._flow_checked + FLOW_CHECK_INTERVAL or (
            self._flow_nudged and now >= self._flow_checked + FLOW_CHECK_AFTER_NUDGE
        )
        if not due:
            return
        self._flow_checked = now
        self._flow_nudged = False
        rows = await self.db.fetch("queue_flow_settings")
        limited = frozenset(row[0] for row in rows)
        counted = frozenset(row[0] for row in rows if row[1])
        if limited != self.limited or counted != self.counted:
            self.limited = limited
            self.counted = counted
            self.route = route(self.statement, limited)
            self.cursor.reset()  # the plain claim's selection changed
            self.flow_wait = None
            self.flow_more = False

    async def claim(self, limit: int, *, suspects: bool = False) -> list[ClaimedJob]:
        """Claim up to `limit` jobs (a seam: tests hold claims back here): from queues with
        limits first (at most the free slots: a limited job is claimed only to start), then
        from the others with the plain statement."""
        limited = self.route.limited
        self.recorded = False
        if limited is None:
            return await self._claim_plain(limit, suspects=suspects)
        ledger = self.ledger
        free = (
            limit
            if self._prefetch_limited()
            else min(limit, ledger.concurrency - len(ledger.running) - len(ledger.buffer))
        )
        jobs: list[ClaimedJob] = []
        self.flow_more = False
        self.flow_wait = None
        if free > 0:
            completer = self.completer
            done = [] if suspects else completer.take_successes()
            self.recorded = bool(done)
            completer.claim_in_flight = True
            try:
                result = await self.db.claim_limited(
                    limited,
                    free,
                    done,
                    suspects=suspects,
                    start=ledger.startable(),
                    began=completer.began,
                )
            except BaseException:
                completer.restore(done)
                raise
            finally:
                completer.claim_finished()
            if done:
                completer.accepted(done, result.accepted)
            self.events.emit(Claimed(len(result.jobs)))
            jobs = result.jobs
            self.flow_wait = result.wait
            self.flow_more = result.wait == 0 or len(jobs) == free
        now = self.clock.now()
        if self.route.plain is not None and len(jobs) < limit and now >= self.plain_dry_until:
            plain = await self._claim_plain(limit - len(jobs), suspects=suspects, taken=jobs)
            if not suspects and len(plain) < limit - len(jobs):
                self.plain_dry_until = now + min(self.settings.poll_interval, FLOW_CHECK_INTERVAL)
            jobs += plain
        return jobs

    async def _claim_plain(
        self, limit: int, *, suspects: bool = False, taken: Sequence[ClaimedJob] = ()
    ) -> list[ClaimedJob]:
        """The plain claim (job_claim.sql). Successes waiting for their write ride along
        with an ordinary claim: one round trip and one commit. `taken`: jobs the limited
        claim just took, which start first."""
        completer = self.completer
        done = [] if suspects else completer.take_successes()
        self.recorded = self.recorded or bool(done)
        # The rows that will take a free slot as soon as the claim returns: the claim
        # records their start; the rest wait in the buffer, claimed but not started.
        start = max(0, self.ledger.startable() - len(taken))
        completer.claim_in_flight = True
        try:
            statement = self.route.plain or self.statement
            if suspects or not statement.continues or not self.cursor.fresh(self.clock.now()):
                jobs = (await self._statement(limit, done, start, suspects=suspects))[0]
            else:
                jobs, positions = await self._statement(limit, done, start, after=True)
                if len(jobs) < limit:
                    # The continuation ran dry (it stays within one priority), or what is
                    # left sorts before it: from the front. The two batches are merged in
                    # claim order, so a higher priority or an earlier row starts first (this
                    # may push a continuation row recorded as started back in the buffer:
                    # rare, and it only makes that row's start look earlier than it was).
                    done = []
                    front, front_positions = await self._statement(limit - len(jobs), [], start)
                    jobs = _in_claim_order(front + jobs, front_positions + positions)
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
    ) -> tuple[list[ClaimedJob], list[Cursor]]:
        """One claim statement: the jobs, and their positions in claim order."""
        position = self.cursor.position if after else None
        statement = self.route.plain or self.statement
        result = await self.db.claim(
            statement,
            limit,
            done,
            start=start,
            began=self.completer.began,
            suspects=suspects,
            after=position,
        )
        if not suspects and statement.continues:
            self.cursor.advance(
                last_in_claim_order(result.positions),
                restarted=position is None,
                now=self.clock.now(),
                dry=len(result.jobs) < limit,
            )
        if done:
            self.completer.accepted(done, result.accepted)
        self.events.emit(Claimed(len(result.jobs)))
        return result.jobs, result.positions

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
