"""The worker's claim arithmetic and its in-flight ledger: pure, so each rule is tested alone.

A claimed job is in exactly one phase until its outcome is written or it is released:
buffered (claimed, waiting for a slot), running, or finished (its outcome waits for the next
batched write). Room to claim, the bound on unwritten outcomes, the shutdown release set and
the ids an orphan check must not touch are all derived from that one ledger.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

#: Seconds a worker's claims continue after its previous one before starting from the front
#: of the claim order again: the longest a job that sorts earlier waits behind the cursor.
CURSOR_TTL = 1.0

#: Seconds between an idle worker's looks for rescued (suspect) jobs, when it found none.
SUSPECT_PROBE_INTERVAL = 1.0


class ClaimedJob(NamedTuple):
    """A claimed row as the worker keeps it (a tuple: built once per job, on the hot path).

    The field order is the claim statement's column order (see `pgqueue._db.claim`)."""

    id: int
    task: str
    queue: str
    args: dict[str, Any]
    attempt: int
    max_attempts: int
    lease: str  # text: it only travels back to the database
    timeout: float | None
    #: The claim recorded the start (the job took a free slot at once). False for a job
    #: claimed ahead into the buffer: its start is recorded when it happens, and `attempt`
    #: already counts the run it will be.
    started: bool = True
    #: The enqueuer's trace context (OpenTelemetry carrier), when one was recorded.
    trace: dict[str, str] | None = None
    #: The slot a schedule made this job for (`current_job().scheduled_for`), else None.
    scheduled_for: datetime | None = None

    @property
    def log_extra(self) -> dict[str, Any]:
        """Record attributes naming this job on every log line about it."""
        return {"job_id": self.id, "task": self.task, "queue": self.queue, "attempt": self.attempt}


#: Where a claim continues: the last claimed row's (priority, run_at, id).
Cursor = tuple[int, datetime, int]


class ClaimCursor:
    """Where the next claim continues, and until when (see `job_claim.sql`, `_after`).

    The clock is passed in (monotonic seconds), so the rule is tested without waiting."""

    def __init__(self, ttl: float = CURSOR_TTL) -> None:
        self.ttl = ttl
        self.position: Cursor | None = None
        self.until = 0.0

    def fresh(self, now: float) -> bool:
        return self.position is not None and now < self.until

    def reset(self) -> None:
        self.position = None

    def advance(
        self, last: Cursor | None, *, restarted: bool, now: float, dry: bool = False
    ) -> None:
        """After a claim: `last` is its last row in claim order, None if it claimed nothing.
        `dry`: it brought fewer rows than asked, so nothing more waits after it; the next
        claim starts from the front (an idle worker's pickup is then one statement, where a
        continuation would find the new job, run dry, and claim again from the front)."""
        if dry:
            self.position = None
            return
        if last is None:
            if restarted:
                self.position = None
            return
        self.position = last
        if restarted:
            self.until = now + self.ttl


def last_in_claim_order(positions: Iterable[Cursor]) -> Cursor | None:
    """The row a continuation starts after: claim order is priority DESC, run_at, id."""
    return max(positions, key=lambda p: (-p[0], p[1], p[2]), default=None)


class Pace:
    """The pace of a worker's starts and the round trip of its claims, smoothed, for
    `Ledger.tune`. The clock is passed in, so the rule is tested without waiting."""

    def __init__(self) -> None:
        self.rate = 0.0  # starts per second between consecutive claims
        self.latency = 0.0  # seconds from sending a claim to its reply
        self._at: float | None = None
        self._starts = 0

    def claimed(self, now: float, starts: int, took: float) -> None:
        """After a claim that took `took` seconds; `starts` is the ledger's count so far."""
        if self._at is not None and now > self._at:
            rate = (starts - self._starts) / (now - self._at)
            # Quick to follow a burst up, and an idle spell (a long gap, few starts) pulls
            # it down at once.
            self.rate = rate if rate > self.rate else (self.rate + rate) / 2
        self._at, self._starts = now, starts
        self.latency = took if self.latency == 0.0 else 0.7 * self.latency + 0.3 * took


class Ledger:
    """Every job this worker has claimed and not yet written back or released."""

    def __init__(self, concurrency: int, prefetch: int, ceiling: int | None = None) -> None:
        self.concurrency = concurrency
        #: Jobs claimed ahead of free slots, now: fixed at `prefetch`, or, given a `ceiling`
        #: above it, tuned between the two by the pace of starts (see `tune`).
        self.prefetch = prefetch
        self.floor = prefetch
        self.ceiling = max(prefetch, ceiling if ceiling is not None else prefetch)
        self.claimed: dict[int, ClaimedJob] = {}
        self.buffer: collections.deque[ClaimedJob] = collections.deque()
        self.running: set[int] = set()
        self.starts = 0  # every start so far: the pace of starts is measured from it

    def add(self, jobs: Sequence[ClaimedJob]) -> None:
        for job in jobs:
            self.claimed[job.id] = job
        self.buffer.extend(jobs)

    def room(self) -> int:
        """How many jobs a claim may ask for now (slots plus prefetch, minus what is held)."""
        return self.concurrency + self.prefetch - len(self.running) - len(self.buffer)

    def low(self) -> bool:
        """Refill before the buffer runs dry, so a claim's round trip overlaps with running
        jobs; with prefetch 0, claim only for free slots."""
        return len(self.buffer) <= self.prefetch // 2

    @property
    def adaptive(self) -> bool:
        return self.ceiling > self.floor

    def tune(self, rate: float, latency: float) -> None:
        """Size the prefetch by throughput: enough buffered jobs to keep every slot busy for
        about three claim round trips at the current pace of starts (a claim is sent when
        half the buffer is left, and its reply takes one round trip), within floor and
        ceiling. Each job's outcome rides along with a claim or a write, so a bigger buffer
        is also a bigger batch: one statement and one commit for many jobs, where a commit
        waits for a WAL flush (3 ms on this project's CI machine). A slow or idle queue
        shrinks it back to the floor, so a worker never holds more than it will start
        within a few round trips, and other workers find the rest."""
        if not self.adaptive:
            return
        want = math.ceil(3.0 * rate * latency)
        self.prefetch = min(self.ceiling, max(self.floor, want))

    @property
    def unwritten_cap(self) -> int:
        """Runs that may be over with their outcome not yet written, plus those running: a
        worker killed at any moment loses the outcomes of at most this many runs (they run
        again). Twice the concurrency, or concurrency plus the prefetch when that is more:
        the outcomes of about one claim's worth of jobs, which is what a batch is."""
        return self.concurrency + max(self.concurrency, self.prefetch)

    def startable(self) -> int:
        """How many jobs a claim made now would start at once: the claim records the start
        of these (the first ones in claim order), the rest wait in the buffer, unstarted."""
        slots = min(
            self.concurrency - len(self.running),
            self.unwritten_cap - (len(self.claimed) - len(self.buffer)),
        )
        return max(0, slots - len(self.buffer))

    def idle(self) -> bool:
        return not self.running and not self.buffer

    def can_start(self) -> bool:
        """A slot frees when its task returns, while the outcome waits for the next batched
        write; but no more than `unwritten_cap` runs may be running or waiting for their
        write, so a worker killed at any moment has lost the outcomes of at most that many
        runs, and only those can run again."""
        return (
            bool(self.buffer)
            and len(self.running) < self.concurrency
            and len(self.claimed) - len(self.buffer) < self.unwritten_cap
        )

    def start_next(self) -> ClaimedJob:
        job = self.buffer.popleft()
        self.running.add(job.id)
        self.starts += 1
        return job

    def finished(self, job_id: int) -> None:
        """The run is over (its outcome, if any, waits for its write)."""
        self.running.discard(job_id)

    def written(self, job_ids: Iterable[int]) -> None:
        """Outcomes written (accepted or stale) or jobs released: no longer ours."""
        for job_id in job_ids:
            self.claimed.pop(job_id, None)

    def unrecorded(self, recorded: set[int]) -> list[ClaimedJob]:
        """At shutdown: claimed jobs without an outcome, to be released unspent."""
        return [job for job_id, job in self.claimed.items() if job_id not in recorded]
