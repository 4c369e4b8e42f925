"""The worker's side of the seam: its pool, its statements and its LISTEN connection."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool

from .._core.claiming import Cursor
from .._core.outcome import Outcome
from .._core.plan import Plan
from .claim import ClaimResult, ClaimStatement, LimitedClaim
from .pools import Database, generic_plans
from .queries import Queries
from .targets import AsyncPsycopgTarget, drive_async

T = TypeVar("T")

#: What a worker's LISTEN connection is, for code (tests included) that wraps `receive`.
ListenConnection = psycopg.AsyncConnection


class WorkerDb:
    """One worker's connections: a small pool for its statements, and a listener."""

    def __init__(
        self,
        database: Database,
        queries: Queries,
        *,
        listen: bool,
        application_name: str,
        on_connect: Callable[[], None],
    ) -> None:
        self.database = database
        self.queries = queries
        self.listen = listen
        self.application_name = application_name
        self._on_connect = on_connect
        self.pool: AsyncConnectionPool[Any] = database.worker_pool(
            listen=listen, configure=self._configure, application_name=application_name
        )
        self.opened = False

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._on_connect()
        # Session state only on a connection of our own: through a transaction-mode pooler
        # a SET would leak onto whichever client gets the server connection next.
        if self.listen and self.database.prepared_statements:
            await generic_plans(conn)

    async def open(self, timeout: float = 30) -> None:
        await self.database.aprobe()
        await self.pool.open(wait=True, timeout=timeout)
        self.opened = True

    async def close(self) -> None:
        await self.pool.close()

    async def fetch(self, name: str, params: dict[str, Any] | None = None) -> list[Any]:
        """Run the named query on a pooled connection; its rows (none for a command)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(self.queries[name], params)
            return await cur.fetchall() if cur.description else []

    async def analyze_jobs(self) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(self.queries.analyze_jobs)

    async def run(self, plan: Plan[T]) -> T:
        """Run a client plan (the schema check) on a pooled connection."""
        first = next(plan)
        async with self.pool.connection() as conn:
            target = AsyncPsycopgTarget(conn, self.queries)
            return await drive_async(plan, target, first)

    async def claim(
        self,
        statement: ClaimStatement,
        limit: int,
        done: Sequence[Outcome],
        *,
        start: int = 0,
        began: Mapping[int, float] | None = None,
        suspects: bool = False,
        after: Cursor | None = None,
    ) -> ClaimResult:
        """One job_claim statement: record `done`, claim up to `limit`, start `start`."""
        query, params = statement.build(
            limit, done, start=start, began=began, suspects=suspects, after=after
        )
        async with self.pool.connection() as conn:
            cur = await conn.execute(query, params)
            return statement.decode(await cur.fetchall())

    async def claim_limited(
        self,
        statement: LimitedClaim,
        limit: int,
        done: Sequence[Outcome],
        *,
        suspects: bool,
        start: int | None = None,
        began: Mapping[int, float] | None = None,
    ) -> ClaimResult:
        """One job_claim_limited statement: record `done`, claim what the limits allow."""
        query, params = statement.build(limit, done, start=start, began=began, suspects=suspects)
        async with self.pool.connection() as conn:
            cur = await conn.execute(query, params)
            return statement.decode(await cur.fetchall())

    @asynccontextmanager
    async def listener(self, channel: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A dedicated LISTEN connection (to `listen_dsn` when set), closed on exit."""
        conn = await self.database.listener(self.application_name)
        async with conn:
            await conn.execute(Queries.listen(channel))
            yield conn

    @staticmethod
    async def notifications(
        conn: psycopg.AsyncConnection[Any], timeout: float
    ) -> AsyncIterator[str]:
        """Payloads received within `timeout` seconds."""
        async for note in conn.notifies(timeout=timeout):
            yield note.payload
