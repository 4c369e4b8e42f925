"""The Client runs plans: it picks the target (the caller's connection or session, or one of
the App's pools), checks the schema once per App, and drives the plan sync or async.

This is the only place the sync and async sides differ, and they differ by one `await`:
every public method of App, Task, TaskCall and Job is a shell over a plan run here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ._core import waiting
from ._core.plan import Plan, Step
from ._core.schema import check_schema
from ._core.spec import JobSpec
from ._db.listener import AsyncWaitTarget, DoneListener, WaitTarget
from ._db.migrate import latest_version
from ._db.pools import Database
from ._db.queries import Queries
from ._db.targets import (
    AsyncPsycopgTarget,
    PsycopgTarget,
    async_target,
    drive,
    drive_async,
    sync_target,
)

T = TypeVar("T")


def _prefixed(prefix: Plan[None], first: Step, plan: Plan[T]) -> Plan[T]:
    """`prefix`, then the rest of a plan whose first step was already taken."""
    yield from prefix
    step = first
    while True:
        try:
            sent = yield step
        except Exception as exc:  # thrown in by the driver: the plan may handle it
            try:
                step = plan.throw(exc)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            continue
        try:
            step = plan.send(sent)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


class Client:
    def __init__(self, database: Database, queries: Queries) -> None:
        self.database = database
        self.queries = queries
        self.schema_ok = False
        #: Set by `pgqueue.testing.inline`: run tasks at enqueue time instead of storing them.
        self.inline: Callable[[JobSpec], Any] | None = None
        self._listener: DoneListener | None = None
        self._lock = threading.Lock()
        #: The App's registration (its tasks' defaults and redaction keys), written to the
        #: catalog before the first statement on one of our own connections, and again after
        #: a task is registered; never inside a caller's transaction (a rollback would lose it).
        self.registration: Callable[[], Plan[None]] | None = None
        self.registered = False

    def _start(self, plan: Plan[T], *, register: bool = False) -> tuple[Step, Plan[T]]:
        """Take the plan's first step before any connection is touched, so its validation
        errors come first; prepend the schema check the first time and, on our own
        connections (`register`), the catalog registration when it is owed. Every plan runs
        at least one statement."""
        first = next(plan)
        register = register and not self.registered and self.registration is not None
        if self.schema_ok and not register:
            return first, plan
        prefixed = _prefixed(self._prefix(register), first, plan)
        return next(prefixed), prefixed

    def _prefix(self, register: bool) -> Plan[None]:
        if not self.schema_ok:
            yield from self._check_schema()
        if register:
            assert self.registration is not None
            yield from self.registration()
            self.registered = True

    def _check_schema(self) -> Plan[None]:
        yield from check_schema(self.queries.schema, latest_version())
        self.schema_ok = True

    def run(self, plan: Plan[T], external: Any = None, *, atomic: bool = False) -> T:
        """Run a plan on `external` (the caller's connection or session: their transaction)
        or on a pooled connection (`atomic`: in a transaction of its own)."""
        first, rest = self._start(plan, register=external is None)
        if external is not None:
            return drive(rest, sync_target(external, self.queries), first)
        with self.database.connection(atomic=atomic) as conn:
            target = PsycopgTarget(conn, self.queries)
            return drive(rest, target, first)

    async def run_async(self, plan: Plan[T], external: Any = None, *, atomic: bool = False) -> T:
        first, rest = self._start(plan, register=external is None)
        if external is not None:
            target = async_target(external, self.queries)
            return await drive_async(rest, target, first)
        async with self.database.aconnection(atomic=atomic) as conn:
            pooled = AsyncPsycopgTarget(conn, self.queries)
            return await drive_async(rest, pooled, first)

    def _done_listener(self) -> DoneListener | None:
        """The App's one LISTEN connection for waiters, started with the first wait; None
        where nothing can listen (behind a transaction-mode pooler without `listen_dsn`)."""
        if self.database.listen_dsn is None:
            return None
        with self._lock:
            if self._listener is None:
                self._listener = DoneListener(self.database, self.queries.done_channel)
            return self._listener

    def wait(self, job_id: int, timeout: float | None) -> Any:
        """Block until the job finishes: wake on the shared listener's notifications (or
        poll, where nothing can listen), re-reading the row on a pooled connection."""
        plan = waiting.wait(job_id, timeout, self.queries.done_channel, time.monotonic)
        first, rest = self._start(plan)
        target = WaitTarget(self.database, self.queries, self._done_listener())
        return drive(rest, target, first)

    async def wait_async(self, job_id: int, timeout: float | None) -> Any:
        plan = waiting.wait(job_id, timeout, self.queries.done_channel, time.monotonic)
        first, rest = self._start(plan)
        target = AsyncWaitTarget(self.database, self.queries, self._done_listener())
        return await drive_async(rest, target, first)

    def close(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
