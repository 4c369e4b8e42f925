"""The worker's claim arithmetic and its in-flight ledger: pure, so each rule is tested alone.

A claimed job is in exactly one phase until its outcome is written or it is released:
buffered (claimed, waiting for a slot), running, or finished (its outcome waits for the next
batched write). Room to claim, the bound on unwritten outcomes, the shutdown release set and
the ids an orphan check must not touch are all derived from that one ledger.
"""

from __future__ import annotations

import collections
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

    def advance(self, last: Cursor | None, *, restarted: bool, now: float) -> None:
        """After a claim: `last` is its last row in claim order, None if it claimed nothing."""
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


class Ledger:
    """Every job this worker has claimed and not yet written back or released."""

    def __init__(self, concurrency: int, prefetch: int) -> None:
        self.concurrency = concurrency
        self.prefetch = prefetch
        self.claimed: dict[int, ClaimedJob] = {}
        self.buffer: collections.deque[ClaimedJob] = collections.deque()
        self.running: set[int] = set()

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

    def startable(self) -> int:
        """How many jobs a claim made now would start at once: the claim records the start
        of these (the first ones in claim order), the rest wait in the buffer, unstarted."""
        slots = min(
            self.concurrency - len(self.running),
            2 * self.concurrency - (len(self.claimed) - len(self.buffer)),
        )
        return max(0, slots - len(self.buffer))

    def idle(self) -> bool:
        return not self.running and not self.buffer

    def can_start(self) -> bool:
        """A slot frees when its task returns, while the outcome waits for the next batched
        write; but no more than `concurrency` outcomes may wait, so a worker killed at any
        moment has lost the outcomes of at most 2 x concurrency runs (running + waiting),
        and only those can run again."""
        return (
            bool(self.buffer)
            and len(self.running) < self.concurrency
            and len(self.claimed) - len(self.buffer) < 2 * self.concurrency
        )

    def start_next(self) -> ClaimedJob:
        job = self.buffer.popleft()
        self.running.add(job.id)
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
