"""Where connections come from: one `Database` per App owns every pool it opens.

Connection options are built here once per purpose (the App's pools, dedicated connections,
the worker's pool and its listener), so a setting such as `prepared_statements=False` (for a
transaction-mode pooler) reaches every connection pgqueue opens.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import psycopg
from psycopg import conninfo
from psycopg_pool import AsyncConnectionPool, ConnectionPool

__all__ = ["ConnectionPool", "Database", "LoopPool", "normalize_dsn", "resolve_dsn"]

from ..errors import ConfigurationError

_FALSE = {"0", "false", "no", "off"}


def normalize_dsn(dsn: str) -> str:
    """Accept SQLAlchemy-style URLs (`postgresql+psycopg://`) as well as libpq ones."""
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgres+psycopg://"):
        if dsn.startswith(prefix):
            return "postgresql://" + dsn[len(prefix) :]
    return dsn


def resolve_dsn(dsn: str | None) -> str:
    found = dsn or os.environ.get("PGQUEUE_DSN") or os.environ.get("DATABASE_URL")
    if not found:
        raise ConfigurationError(
            "no database configured: pass App(dsn) or App(pool=...), or set PGQUEUE_DSN"
            " (DATABASE_URL is read too)"
        )
    return normalize_dsn(found)


def prepared_statements_from_env(value: bool | None) -> bool:
    """`PGQUEUE_PREPARED_STATEMENTS=0` turns them off where the code did not decide."""
    if value is not None:
        return value
    return os.environ.get("PGQUEUE_PREPARED_STATEMENTS", "1").strip().lower() not in _FALSE


def pool_conninfo(pool: ConnectionPool[Any]) -> str:
    """Workers and waiters open their own connections to the pool's database."""
    info = pool.conninfo
    return info() if callable(info) else info


def pool_kwargs(pool: ConnectionPool[Any]) -> dict[str, Any]:
    info = pool.kwargs
    kwargs = (info() if callable(info) else info) or {}
    return {k: v for k, v in kwargs.items() if k != "autocommit"}


async def generic_plans(conn: psycopg.AsyncConnection[Any]) -> None:
    """The worker's statements are written so that one plan fits every call (literal state
    filters matching the partial indexes): planning them again per call, which PostgreSQL's
    plan cache otherwise does for a while and then now and again, is wasted server CPU."""
    await conn.execute("SET plan_cache_mode = force_generic_plan")


class Database:
    """The App's connections: a sync pool, one async pool per event loop, dedicated
    connections for LISTEN, and the settings every one of them shares."""

    def __init__(
        self,
        dsn: str | None,
        *,
        pool: ConnectionPool[Any] | None = None,
        prepared_statements: bool | None = None,
        listen_dsn: str | None = None,
    ) -> None:
        if pool is not None and dsn is not None:
            raise ConfigurationError("pass a dsn or a pool, not both")
        self._external_pool = pool
        self.dsn = resolve_dsn(dsn) if pool is None else pool_conninfo(pool)
        #: Connection options beyond the DSN (a password, sslmode, ...): a pool passed in may
        #: carry them in its `kwargs`, and every connection pgqueue opens must use them too.
        self.connect_kwargs: dict[str, Any] = pool_kwargs(pool) if pool is not None else {}
        self.prepared_statements = prepared_statements_from_env(prepared_statements)
        listen_dsn = listen_dsn or os.environ.get("PGQUEUE_LISTEN_DSN") or None
        #: The direct connection for LISTEN the caller gave (past a pooler), if any.
        self.direct_listen_dsn = normalize_dsn(listen_dsn) if listen_dsn else None
        self._pool: ConnectionPool[Any] | None = pool
        self._apools: dict[asyncio.AbstractEventLoop, LoopPool] = {}
        self._lock = threading.Lock()

    @property
    def listen_dsn(self) -> str | None:
        """Where LISTEN connections go: the direct `listen_dsn`, else the DSN itself, except
        behind a transaction-mode pooler (prepared statements off), where a LISTEN would hear
        nothing: None, and waiting polls instead."""
        if self.direct_listen_dsn is not None:
            return self.direct_listen_dsn
        return self.dsn if self.prepared_statements else None

    def derive(
        self, *, prepared_statements: bool | None = None, listen_dsn: str | None = None
    ) -> Database:
        """The same database with these connection settings overridden (a worker's CLI
        flags); shares nothing but the settings, so its pools are its own."""
        if prepared_statements is None and listen_dsn is None:
            return self
        derived = Database(
            self.dsn,
            prepared_statements=(
                self.prepared_statements if prepared_statements is None else prepared_statements
            ),
            listen_dsn=listen_dsn or self.direct_listen_dsn,
        )
        derived.connect_kwargs = self.connect_kwargs
        return derived

    def kwargs(self, *, autocommit: bool = True, prepare: bool = True) -> dict[str, Any]:
        """Options for one connection; `prepare=False` turns server-side prepared statements
        off even where the App allows them (a poll-only worker keeps no session state)."""
        options = {**self.connect_kwargs, "autocommit": autocommit}
        if not (self.prepared_statements and prepare):
            options["prepare_threshold"] = None
        return options

    def application_name(self, name: str) -> dict[str, Any]:
        """Name our connections in pg_stat_activity, unless the DSN already names them."""
        if conninfo.conninfo_to_dict(self.dsn).get("application_name"):
            return {}
        return {"application_name": name}

    # --- the App's pools ------------------------------------------------------------------

    @property
    def pool(self) -> ConnectionPool[Any]:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self.probe()
                    self._pool = ConnectionPool(
                        self.dsn,
                        min_size=1,
                        max_size=8,
                        open=True,
                        name="pgqueue",
                        kwargs=self.kwargs(),
                    )
        return self._pool

    def apool(self) -> LoopPool:
        """This event loop's connections (one LoopPool per loop: async connections belong to
        the loop that opened them)."""
        loop = asyncio.get_running_loop()
        pool = self._apools.get(loop)
        if pool is None:
            pool = self._apools[loop] = LoopPool(self.aconnect, max_size=8)
        return pool

    @contextmanager
    def connection(self, *, atomic: bool = False) -> Iterator[psycopg.Connection[Any]]:
        """A pooled autocommit connection: one statement is atomic by itself, and an explicit
        transaction would cost two more round trips. `atomic` opens one (bulk enqueue)."""
        with self.pool.connection() as conn:
            if atomic:
                with conn.transaction():
                    yield conn
            else:
                yield conn

    @asynccontextmanager
    async def aconnection(
        self, *, atomic: bool = False
    ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with self.apool().connection() as conn:
            if atomic:
                async with conn.transaction():
                    yield conn
            else:
                yield conn

    def probe(self) -> None:
        """One direct connection, closed at once: a database that cannot be reached fails
        now, with libpq's own reason, instead of after a pool's silent 30 s wait."""
        psycopg.connect(self.dsn, **self.kwargs()).close()

    async def aprobe(self) -> None:
        await (await psycopg.AsyncConnection.connect(self.dsn, **self.kwargs())).close()

    def connect(self, *, listen: bool = False) -> psycopg.Connection[Any]:
        """A new dedicated autocommit connection; `listen` sends it to `listen_dsn`."""
        dsn = self.listen_dsn if listen and self.listen_dsn else self.dsn
        return psycopg.connect(dsn, **self.kwargs())

    async def aconnect(self, *, listen: bool = False) -> psycopg.AsyncConnection[Any]:
        dsn = self.listen_dsn if listen and self.listen_dsn else self.dsn
        return await psycopg.AsyncConnection.connect(dsn, **self.kwargs())

    def close(self) -> None:
        """Close every pool this Database opened (not one passed in with `pool=`), and every
        event loop's idle async connections (their sockets: no loop needs to run for that)."""
        if self._pool is not None and self._pool is not self._external_pool:
            self._pool.close()
            self._pool = None
        pools, self._apools = list(self._apools.values()), {}
        for pool in pools:
            pool.close_now()

    async def aclose(self) -> None:
        """Close this loop's async connections and everything `close()` can close."""
        pool = self._apools.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            await pool.close()
        await asyncio.to_thread(self.close)

    # --- the worker's connections ---------------------------------------------------------

    def worker_pool(
        self,
        *,
        listen: bool,
        configure: Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]],
        application_name: str,
    ) -> AsyncConnectionPool[Any]:
        """The worker's small pool. Poll-only is the PgBouncer (transaction mode) setting:
        no session state at all, so no server-side prepared statements either."""
        return AsyncConnectionPool(
            self.dsn,
            min_size=1,
            max_size=3,
            open=False,
            name="pgqueue-worker",
            kwargs={**self.kwargs(prepare=listen), **self.application_name(application_name)},
            configure=configure,
        )

    async def listener(self, application_name: str) -> psycopg.AsyncConnection[Any]:
        """A dedicated connection for the worker's LISTEN (to `listen_dsn` when set)."""
        assert self.listen_dsn is not None
        return await psycopg.AsyncConnection.connect(
            self.listen_dsn, **{**self.kwargs(), **self.application_name(application_name)}
        )


class LoopPool:
    """An event loop's async connections: at most `max_size` in use at once, idle ones kept.

    No background tasks, unlike psycopg_pool's AsyncConnectionPool: a pool whose loop ends
    without being closed (`asyncio.run(job.wait_async())` twice in a script) must not leave
    tasks behind, whose cancellation at the loop's shutdown could hang it. A connection that
    broke, or is left inside a transaction, is closed instead of kept.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[psycopg.AsyncConnection[Any]]],
        *,
        max_size: int,
    ) -> None:
        self._connect = connect
        self._slots = asyncio.Semaphore(max_size)
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self.max_size = max_size

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with self._slots:
            conn = self._idle.pop() if self._idle else await self._connect()
            try:
                yield conn
            finally:
                if (
                    not conn.closed
                    and not conn.broken
                    and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
                ):
                    self._idle.append(conn)
                else:
                    await conn.close()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()

    def close_now(self) -> None:
        """Close the idle connections' sockets without their loop (it may be gone)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.pgconn.finish()
