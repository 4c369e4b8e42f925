"""The App's flow-control methods (DESIGN.md section 8): queue settings and their use."""

from __future__ import annotations

from typing import Any

from ._client import Client
from ._core import flow
from .types import QueueLimit, QueueSettings


class _Unset:
    """The default of a `configure_queue` setting: not passed, so left as it is."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


def _changes(**settings: Any) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if v is not UNSET}


class FlowMethods:
    """Mixed into App: sync and async shells over the plans in `_core/flow.py`."""

    client: Client

    def configure_queue(
        self,
        name: str,
        *,
        concurrency: int | None = UNSET,
        rate: str | None = UNSET,
        group_concurrency: int | None = UNSET,
        group_rate: str | None = UNSET,
        fair: bool | None = UNSET,
        max_depth: int | None = UNSET,
    ) -> QueueSettings:
        """Set a queue's flow-control settings in the database, for every worker process.

        A setting not passed stays as it is; `None` removes it. `concurrency`: at most this
        many of the queue's jobs running at once across all workers; `rate`: at most N job
        starts in any window of the period (`"20/s"`, `"100/m"`, `"5/h"`, `"1000/d"`,
        `"30/10s"`); `group_concurrency` and `group_rate`: the same per `group_key`; `fair`:
        round-robin across group keys within a priority; `max_depth`: enqueue raises
        QueueFull past this many waiting jobs. Workers apply a change within a second,
        without a restart. Returns the queue's settings after the change; bad input raises
        ValidationError and changes nothing.
        """
        changes = _changes(
            concurrency=concurrency,
            rate=rate,
            group_concurrency=group_concurrency,
            group_rate=group_rate,
            fair=fair,
            max_depth=max_depth,
        )
        return self.client.run(flow.configure(name, changes))

    async def configure_queue_async(
        self,
        name: str,
        *,
        concurrency: int | None = UNSET,
        rate: str | None = UNSET,
        group_concurrency: int | None = UNSET,
        group_rate: str | None = UNSET,
        fair: bool | None = UNSET,
        max_depth: int | None = UNSET,
    ) -> QueueSettings:
        changes = _changes(
            concurrency=concurrency,
            rate=rate,
            group_concurrency=group_concurrency,
            group_rate=group_rate,
            fair=fair,
            max_depth=max_depth,
        )
        return await self.client.run_async(flow.configure(name, changes))

    def queue_settings(self, name: str) -> QueueSettings:
        """A queue's flow-control settings (all unset for a queue without any)."""
        return self.client.run(flow.settings(name))

    async def queue_settings_async(self, name: str) -> QueueSettings:
        return await self.client.run_async(flow.settings(name))

    def queue_limits(self, queue: str | None = None) -> list[QueueLimit]:
        """Rows of the `pgqueue.queue_limits` view: every limit with its use now (slots
        held, starts in the current window, tokens left, waiting jobs), per queue and per
        busy group."""
        return self.client.run(flow.limits(queue))

    async def queue_limits_async(self, queue: str | None = None) -> list[QueueLimit]:
        return await self.client.run_async(flow.limits(queue))

    def rejected_enqueues(self) -> int:
        """How many enqueues every client had refused with QueueFull (a database counter)."""
        return self.client.run(flow.rejected())

    async def rejected_enqueues_async(self) -> int:
        return await self.client.run_async(flow.rejected())
