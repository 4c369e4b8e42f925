"""One typed event stream for everything a worker counts: `worker.stats`, Prometheus and
log lines are subscribers, fed from the same place (one emit per batch, not per job)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from .._core.outcome import Outcome
from ..types import JobState

log = logging.getLogger("pgqueue.worker")


class Claimed(NamedTuple):
    n: int


class OutcomesWritten(NamedTuple):
    """A batch of outcomes reached the database; `accepted` passed the lease guard, the
    rest belonged to runs whose job had moved on (stale)."""

    outcomes: Sequence[Outcome]
    accepted: set[int]


class Released(NamedTuple):
    """Claimed jobs given back unspent (lost claim replies, or unstarted at shutdown)."""

    n: int


class Rescued(NamedTuple):
    #: (job id, task, queue) per rescued job.
    jobs: Sequence[tuple[Any, ...]] = ()


class Pruned(NamedTuple):
    n: int


class Expired(NamedTuple):
    """Jobs not started by their `expires_at`, cancelled as expired by the leader."""

    n: int


class Overdue(NamedTuple):
    job_id: int


class CancelledByRequest(NamedTuple):
    job_id: int


class ListenerRebuilt(NamedTuple):
    reason: str


Event = (
    Claimed
    | OutcomesWritten
    | Released
    | Rescued
    | Pruned
    | Expired
    | Overdue
    | CancelledByRequest
    | ListenerRebuilt
)

STAT_KEYS = (
    "claimed",
    "claims",  # claim statements that claimed something: claimed / claims is the batch size
    "completed",
    "failed",
    "retried",
    "stale",
    "released",
    "pruned",
    "expired",
    "overdue",
    "cancelled",
    "rescued",
    "listener_rebuilds",
)


class Stats(dict[str, int]):
    """`worker.stats`: a plain mapping with today's keys, kept by the event stream."""

    def __init__(self) -> None:
        super().__init__(dict.fromkeys(STAT_KEYS, 0))

    def __call__(self, event: Event) -> None:
        if isinstance(event, OutcomesWritten):
            outcomes, accepted = event.outcomes, event.accepted
            self["stale"] += len(outcomes) - len(accepted)
            if (
                outcomes
                and outcomes[0].state is JobState.COMPLETED
                and (outcomes[-1].state is JobState.COMPLETED)
            ):
                # A batch of successes (the completer writes them apart from failures): no
                # need to look at each outcome.
                self["completed"] += len(accepted)
                return
            for o in outcomes:
                if o.job.id not in accepted:
                    continue
                if o.state is JobState.COMPLETED:
                    self["completed"] += 1
                elif o.state is JobState.FAILED:
                    self["failed"] += 1
                elif o.state is JobState.RETRYING:
                    self["retried"] += 1
        elif isinstance(event, Claimed):
            self["claimed"] += event.n
            self["claims"] += event.n > 0
        elif isinstance(event, Released):
            self["released"] += event.n
        elif isinstance(event, Rescued):
            self["rescued"] += len(event.jobs)
        elif isinstance(event, Pruned):
            self["pruned"] += event.n
        elif isinstance(event, Expired):
            self["expired"] += event.n
        elif isinstance(event, Overdue):
            self["overdue"] += 1
        elif isinstance(event, CancelledByRequest):
            self["cancelled"] += 1
        elif isinstance(event, ListenerRebuilt):
            self["listener_rebuilds"] += 1


class Events:
    def __init__(self) -> None:
        self.subscribers: list[Callable[[Event], None]] = []
        self.failed: set[Callable[[Event], None]] = set()

    def subscribe(self, subscriber: Callable[[Event], None]) -> None:
        self.subscribers.append(subscriber)

    def emit(self, event: Event) -> None:
        """Every subscriber sees the event; one that raises is logged and skipped, never
        allowed to unwind into the statement path that emitted it (an observer's bug
        raised in the completer's bookkeeping would leave written outcomes unaccounted)."""
        for subscriber in self.subscribers:
            try:
                subscriber(event)
            except Exception:
                first = subscriber not in self.failed
                self.failed.add(subscriber)
                log.log(
                    logging.ERROR if first else logging.DEBUG,
                    "event subscriber %r failed on %s",
                    subscriber,
                    type(event).__name__,
                    exc_info=first,
                )
