"""The claim statement: which variant of `job_claim.sql` to run, its array parameters, and
its row layout. The one place that names claim variants and decodes claim rows; the Producer
(claims) and the Completer (limit-0 success writes) both go through `ClaimStatement`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple
from uuid import UUID

from .._core.claiming import ClaimedJob, Cursor
from .._core.outcome import Outcome
from .queries import Queries

#: Row layout of job_claim.sql: column 0 says claimed (true) or completed (false); columns
#: 1-8 are ClaimedJob's fields in order; 9 and 10 the priority and run_at of a claimed row
#: (with its id, the continuation cursor); 11 the schedule slot (ClaimedJob's last field).
_PRIORITY, _RUN_AT, _SCHEDULED_FOR = 9, 10, 11


class ClaimResult(NamedTuple):
    jobs: list[ClaimedJob]
    #: (priority, run_at, id) of each claimed row, for the continuation cursor.
    positions: list[Cursor]
    #: Ids of the successes the lease guard accepted.
    accepted: set[int]


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
        suspects: bool = False,
        after: Cursor | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """The statement and parameters: record `done`, then claim up to `limit` jobs
        (suspects only, or after the cursor `after`, in claim order). Array parameters are
        built as literals by one string join: adapting lists element by element cost more
        than running the jobs."""
        params = dict(self._base)
        params["limit"] = limit
        params["ids"] = "{" + ",".join([str(o.job.id) for o in done]) + "}"
        params["leases"] = "{" + ",".join([o.job.lease for o in done]) + "}"
        params["results"] = "[" + ",".join([o.result or "null" for o in done]) + "]"
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
                jobs.append(
                    ClaimedJob(
                        row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8],
                        row[_SCHEDULED_FOR],
                    )
                )  # fmt: skip
                positions.append((row[_PRIORITY], row[_RUN_AT], row[1]))
            else:
                accepted.add(row[1])
        return ClaimResult(jobs, positions, accepted)
