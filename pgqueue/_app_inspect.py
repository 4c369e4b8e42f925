"""The App's read-only views of the queue: job listings, workflows, workers, statistics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._client import Client
from ._core import admin, workflow
from .types import QueueStats


class InspectMethods:
    """Mixed into App: sync and async shells over the listing plans in `_core/admin.py`
    (and `_core/workflow.py` for a job's workflow)."""

    client: Client

    def list_jobs(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        task: str | None = None,
        older_than: float | None = None,
        newer_than: float | None = None,
        limit: int = 50,
        before: int | None = None,
        after: int | None = None,
        group_key: str | None = None,
        topic: str | None = None,
        schedule: str | None = None,
    ) -> list[dict[str, Any]]:
        """Jobs as the `job_status` view shows them, newest first; every filter is optional.

        Keyset pagination: `before=<smallest id shown>` is the next (older) page,
        `after=<largest id shown>` the previous (newer) one; either costs what the first page
        does however deep it is."""
        return self.client.run(
            admin.list_jobs(
                state=state,
                queue=queue,
                task=task,
                older_than=older_than,
                newer_than=newer_than,
                limit=limit,
                before=before,
                after=after,
                group_key=group_key,
                topic=topic,
                schedule=schedule,
            )
        )

    async def list_jobs_async(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        task: str | None = None,
        older_than: float | None = None,
        newer_than: float | None = None,
        limit: int = 50,
        before: int | None = None,
        after: int | None = None,
        group_key: str | None = None,
        topic: str | None = None,
        schedule: str | None = None,
    ) -> list[dict[str, Any]]:
        return await self.client.run_async(
            admin.list_jobs(
                state=state,
                queue=queue,
                task=task,
                older_than=older_than,
                newer_than=newer_than,
                limit=limit,
                before=before,
                after=after,
                group_key=group_key,
                topic=topic,
                schedule=schedule,
            )
        )

    def job_graph(self, job_id: int) -> dict[str, Any]:
        """A job's workflow: the jobs it runs after (`after`), spawned (`spawned`), is needed
        by (`needed_by`) or was spawned by (`spawned_by`), each with its state; its finished
        `steps`; and the ids it is still `waiting_on`."""
        return self.client.run(workflow.graph(job_id))

    async def job_graph_async(self, job_id: int) -> dict[str, Any]:
        return await self.client.run_async(workflow.graph(job_id))

    def stuck_jobs(self, limit: int = 50) -> list[dict[str, Any]]:
        """Rows of the `stuck_jobs` view: long-running, rescued or often-retried jobs."""
        return self.client.run(admin.listing("stuck_list", limit))

    async def stuck_jobs_async(self, limit: int = 50) -> list[dict[str, Any]]:
        return await self.client.run_async(admin.listing("stuck_list", limit))

    def count_stuck(self) -> int:
        """How many rows the `stuck_jobs` view has (a listing stops at its limit)."""
        return self.client.run(admin.stuck_count())

    async def count_stuck_async(self) -> int:
        return await self.client.run_async(admin.stuck_count())

    def workers(self) -> list[dict[str, Any]]:
        """Live worker processes, with heartbeat age, running jobs and leadership."""
        return self.client.run(admin.listing("worker_list"))

    async def workers_async(self) -> list[dict[str, Any]]:
        return await self.client.run_async(admin.listing("worker_list"))

    def running_jobs(self, limit: int = 200) -> list[dict[str, Any]]:
        """Running jobs, longest-running first, each with its `worker_id` (see `workers`)."""
        return self.client.run(admin.running_jobs(limit))

    async def running_jobs_async(self, limit: int = 200) -> list[dict[str, Any]]:
        return await self.client.run_async(admin.running_jobs(limit))

    def throughput(self, bucket: float = 10.0, buckets: int = 30) -> list[tuple[int, int]]:
        """(completed, failed) per bucket of `bucket` seconds, oldest first."""
        return self.client.run(admin.throughput(bucket, buckets))

    async def throughput_async(
        self, bucket: float = 10.0, buckets: int = 30
    ) -> list[tuple[int, int]]:
        return await self.client.run_async(admin.throughput(bucket, buckets))

    def recent_failures(self, limit: int = 10) -> list[dict[str, Any]]:
        return self.client.run(admin.listing("recent_failures", limit))

    async def recent_failures_async(self, limit: int = 10) -> list[dict[str, Any]]:
        return await self.client.run_async(admin.listing("recent_failures", limit))

    def unfinished(self, job_ids: Sequence[int]) -> int:
        """How many of these jobs are still to run (scheduled, available, running, retrying)."""
        return self.client.run(admin.unfinished(job_ids))

    async def unfinished_async(self, job_ids: Sequence[int]) -> int:
        return await self.client.run_async(admin.unfinished(job_ids))

    def queue_stats(self) -> list[QueueStats]:
        return self.client.run(admin.queue_stats())

    async def queue_stats_async(self) -> list[QueueStats]:
        return await self.client.run_async(admin.queue_stats())
