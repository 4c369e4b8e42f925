"""The claim statement: which variant of `job_claim.sql` to run, its array parameters, and
its row layout. The one place that names claim variants and decodes claim rows; the Producer
(claims) and the Completer (limit-0 success writes) both go through `ClaimStatement`.

Queues with flow-control settings (limits, fairness: DESIGN.md section 8) are claimed by a
second strategy, `LimitedClaim` (`job_claim_limited.sql`, the `claim_limited` function of
012_flow_control.sql), with the same row layout; `route` splits a worker's queue selection
between the two, so queues without settings keep the plain statement unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any, NamedTuple
from uuid import UUID

from .._core.claiming import ClaimedJob, Cursor
from .._core.outcome import Outcome
from .queries import QUARANTINE_AFTER, Queries

#: Row layout of job_claim.sql: column 0 says claimed (true) or completed (false); columns
#: 1-11 are ClaimedJob's fields in order (the last the schedule slot); 12 and 13 the priority
#: and run_at of a claimed row (with its id, the continuation cursor).
_JOB = slice(1, 12)
_PRIORITY, _RUN_AT = 12, 13


class ClaimResult(NamedTuple):
    jobs: list[ClaimedJob]
    #: (priority, run_at, id) of each claimed row, for the continuation cursor.
    positions: list[Cursor]
    #: Ids of the successes the lease guard accepted.
    accepted: set[int]
    #: Limited claims only: seconds until a limit permits the next start (0: more may be
    #: claimed at once), or None when no limit held the claim back.
    wait: float | None = None


class ClaimStatement:
    """The claim statement for one worker's queue selection."""

    def __init__(
        self,
        queries: Queries,
        worker_id: UUID,
        queues: Sequence[str] | None,
        excluded: Sequence[str] | None = None,
    ) -> None:
        self.queries = queries
        self.worker_id = worker_id
        self.queues = list(queues) if queues else None
        self.excluded = list(excluded) if excluded else None
        if self.queues and self.excluded:
            raise ValueError("a claim names queues or excludes some, not both")
        kind = (
            "_except"
            if self.excluded
            else "_all"
            if not self.queues
            else "_one"
            if len(self.queues) == 1
            else "_some"
        )
        #: A continuation is possible in one index order only: every queue, or one queue.
        self.continues = kind != "_some"
        self._plain = queries["job_claim" + kind]
        self._suspect = queries["job_claim_suspect" + kind]
        self._after = queries["job_claim_after" + kind] if self.continues else None
        self._base: dict[str, Any] = {
            "queues": self.queues,
            "worker_id": worker_id,
            "queue": self.queues[0] if self.queues else None,
            "excluded": self.excluded,
            "done_channel": queries.done_channel,
        }

    def build(
        self,
        limit: int,
        done: Sequence[Outcome],
        *,
        start: int = 0,
        began: Mapping[int, float] | None = None,
        suspects: bool = False,
        after: Cursor | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """The statement and parameters: record `done`, then claim up to `limit` jobs
        (suspects only, or after the cursor `after`, in claim order), the first `start` of
        them started at once. `began` gives, for jobs of `done` that started from the
        buffer with their start not yet recorded, their start (`time.monotonic()`). Array
        parameters are built as literals by one string join: adapting lists element by
        element cost more than running the jobs."""
        params = dict(self._base)
        params["limit"] = limit
        params["start"] = start
        params.update(_arrays(done, began))
        if suspects:
            return self._suspect, params
        if after is not None and self._after is not None:
            params["after_priority"], params["after_run_at"], params["after_id"] = after
            return self._after, params
        return self._plain, params

    @staticmethod
    def decode(rows: Sequence[Sequence[Any]]) -> ClaimResult:
        jobs: list[ClaimedJob] = []
        positions: list[Cursor] = []
        accepted: set[int] = set()
        for row in rows:
            if row[0]:
                jobs.append(ClaimedJob(*row[_JOB]))
                positions.append((row[_PRIORITY], row[_RUN_AT], row[1]))
            else:
                accepted.add(row[1])
        return ClaimResult(jobs, positions, accepted)


def seconds_since(done: Sequence[Outcome], began: Mapping[int, float]) -> list[float | None]:
    """Per outcome: seconds since its run started, where its start is not recorded yet."""
    now = time.monotonic()
    return [None if (t := began.get(o.job.id)) is None else now - t for o in done]


def began_literal(done: Sequence[Outcome], began: Mapping[int, float]) -> str:
    agos = seconds_since(done, began)
    return "{" + ",".join(["NULL" if ago is None else repr(ago) for ago in agos]) + "}"


def _arrays(done: Sequence[Outcome], began: Mapping[int, float] | None) -> dict[str, str]:
    """The successes to record, as array literals; `began` (shorter than `ids` when no
    buffered start is pending: unnest pads it with NULL) their starts not recorded yet."""
    return {
        "ids": "{" + ",".join([str(o.job.id) for o in done]) + "}",
        "leases": "{" + ",".join([o.job.lease for o in done]) + "}",
        "results": "[" + ",".join([o.result or "null" for o in done]) + "]",
        "began": began_literal(done, began) if began else "{}",
    }


class LimitedClaim:
    """The claim of a worker's queues that have limits or fairness (`claim_limited`):
    records successes, then claims what every limit allows, with a hint row (claimed NULL)
    saying how long until a limit permits the next start."""

    def __init__(self, queries: Queries, worker_id: UUID, queues: Sequence[str]) -> None:
        self.queries = queries
        self.worker_id = worker_id
        self.queues = sorted(queues)
        self._query = queries["job_claim_limited"]
        self._base: dict[str, Any] = {
            "queues": self.queues,
            "worker_id": worker_id,
            "done_channel": queries.done_channel,
            "quarantine": QUARANTINE_AFTER,
        }

    def build(
        self,
        limit: int,
        done: Sequence[Outcome],
        *,
        start: int | None = None,
        began: Mapping[int, float] | None = None,
        suspects: bool = False,
    ) -> tuple[str, dict[str, Any]]:
        params = dict(self._base)
        params["limit"] = limit
        params["start"] = start
        params["suspects"] = suspects
        params.update(_arrays(done, began))
        return self._query, params

    @staticmethod
    def decode(rows: Sequence[Sequence[Any]]) -> ClaimResult:
        jobs: list[ClaimedJob] = []
        accepted: set[int] = set()
        wait: float | None = None
        for row in rows:
            if row[0] is None:
                wait = float(row[8])
            elif row[0]:
                jobs.append(ClaimedJob(*row[_JOB]))
            else:
                accepted.add(row[1])
        return ClaimResult(jobs, [], accepted, wait)


class Route(NamedTuple):
    """A worker's queue selection split between the two claim strategies."""

    #: The plain claim for the queues without settings (None: every served queue is limited).
    plain: ClaimStatement | None
    #: The limited claim for the served queues with settings (None: none has any).
    limited: LimitedClaim | None


def route(base: ClaimStatement, limited: Collection[str]) -> Route:
    """Which of the worker's queues each strategy claims, given the queues that have limits
    now (`limited`): those the worker serves go to `LimitedClaim`, and the plain claim
    leaves them out (named queues minus them; or them added to the excluded ones), so it
    never walks past a limited queue's backlog. The plain claim skips limited queues in the
    database too (job_claim.sql), so a route a second stale is slow, never over a limit."""
    if base.queues:
        served = [q for q in base.queues if q in limited]
        rest = [q for q in base.queues if q not in limited]
        plain = (
            base
            if not served
            else (ClaimStatement(base.queries, base.worker_id, rest) if rest else None)
        )
    else:
        excluded = base.excluded or []
        served = sorted(q for q in limited if q not in excluded)
        plain = (
            base
            if not served
            else ClaimStatement(base.queries, base.worker_id, None, excluded=[*excluded, *served])
        )
    return Route(plain, LimitedClaim(base.queries, base.worker_id, served) if served else None)
